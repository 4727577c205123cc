package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/imgbake/imgbake/image/bmap"
	"github.com/imgbake/imgbake/image/manifest"
	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/fixture"
	"github.com/imgbake/imgbake/internal/testlog"
)

const testToken = "K10secret-token-value::server:0123456789abcdef"

// testPlan is a plan like a k3s worker's, with a streamed binary of
// srcSize bytes.
func testPlan(t *testing.T, srcSize int64) *plan.Plan {
	t.Helper()
	src := filepath.Join(t.TempDir(), "k3s")
	data := bytes.Repeat([]byte("k3s-binary\x00\x01\x02"), int(srcSize/13)+1)[:srcSize]
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return &plan.Plan{
		Entries: []plan.Entry{
			{Part: plan.Root, Path: "/etc/hostname", Kind: plan.File, Mode: 0o644, Data: []byte("k5\n")},
			{Part: plan.Root, Path: "/usr/local/bin/k3s", Kind: plan.File, Mode: 0o755, Source: src},
			{Part: plan.Root, Path: "/etc/rancher/k3s", Kind: plan.Dir, Mode: 0o750},
			{Part: plan.Root, Path: "/etc/rancher/k3s/token", Kind: plan.File, Mode: 0o600, Data: []byte(testToken), Secret: true},
			{Part: plan.Root, Path: "/etc/systemd/system/k3s-agent.service", Kind: plan.File, Mode: 0o644, Data: []byte("[Unit]\nDescription=k3s\n")},
			{Part: plan.Root, Path: "/etc/systemd/system/multi-user.target.wants/k3s-agent.service", Kind: plan.Symlink,
				Mode: 0o777, Target: "/etc/systemd/system/k3s-agent.service"},
			// /usr/sbin/init is a symlink in the base: the entry replaces it.
			{Part: plan.Root, Path: "/usr/sbin/init", Kind: plan.File, Mode: 0o755, Data: []byte("#!/bin/sh\n")},
			{Part: plan.Root, Path: "/home/pirate/.ssh/authorized_keys", Kind: plan.File, Mode: 0o600, UID: 1000, GID: 1000, Data: []byte("ssh-ed25519 AAAA test\n")},
			{Part: plan.Boot, Path: "/imgbake/node.txt", Kind: plan.File, Data: []byte("node: k5\n")},
		},
		Edits: []plan.Edit{
			{Part: plan.Boot, Path: "/cmdline.txt", Desc: "add cgroup flags", Func: func(old []byte) ([]byte, error) {
				return append(bytes.TrimRight(old, "\n"), []byte(" cgroup_memory=1 cgroup_enable=memory\n")...), nil
			}},
			{Part: plan.Root, Path: "/etc/hosts", Desc: "rename host", Func: func(old []byte) ([]byte, error) {
				return bytes.ReplaceAll(old, []byte("raspberrypi"), []byte("k5")), nil
			}},
			{Part: plan.Root, Path: "/etc/new-by-edit", Desc: "create", Mode: 0o640, Func: func(old []byte) ([]byte, error) {
				if old != nil {
					return nil, errors.New("expected no file")
				}
				return []byte("created\n"), nil
			}},
		},
		Removes: []string{"/etc/machine-id", "boot:/issue.txt", "/does/not/exist"},
	}
}

// prepared returns a prepared base for the fixture, decompressed from .xz
// when viaXZ.
func prepared(t *testing.T, name string, viaXZ bool) *Base {
	t.Helper()
	in := fixture.Cached(t, name)
	if viaXZ {
		in = fixture.Compress(t, in, "xz")
	}
	b, err := PrepareBase(context.Background(), in, filepath.Join(t.TempDir(), "cache"), PrepareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkImage runs e2fsck and fsck.vfat on the built image.
func checkImage(t *testing.T, img string) *Info {
	t.Helper()
	info, err := Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := info.Partition(info.RootPartition)
	fixture.Run(t, "e2fsck", "-fn", partDev(img, root))
	if bp, ok := info.Partition(info.BootPartition); ok {
		f := filepath.Join(t.TempDir(), "boot.img")
		fixture.Run(t, "dd", "if="+img, "of="+f, "bs=1M", "skip="+itoa(bp.Start>>20), "count="+itoa(bp.Size>>20), "status=none")
		fixture.Run(t, "fsck.vfat", "-n", f)
	}
	return info
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestBuildAppliesPlan(t *testing.T) {
	fixture.RequireTools(t, "debugfs", "fsck.vfat", "mtype")
	base := prepared(t, fixture.RaspiOSBookwormArm64, true)
	baseSum := sha(mustRead(t, base.Path))
	out := filepath.Join(t.TempDir(), "out", "k5.img")
	res, err := Build(context.Background(), BuildOptions{Base: base, Output: out, Plan: testPlan(t, 3<<20), SHA256: true,
		Epoch: time.Unix(1700000000, 0), Meta: map[string]string{"node": "k5", "k3s_version": "v1.31.4+k3s1"}})
	if err != nil {
		t.Fatal(err)
	}
	if sha(mustRead(t, base.Path)) != baseSum {
		t.Fatal("the base image changed")
	}
	assertOnly(t, filepath.Dir(out), "k5.img", "k5.img.bmap", "k5.img.manifest.json")
	var st syscall.Stat_t
	if err := syscall.Stat(res.Image, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > res.Size/2 {
		t.Errorf("image uses %d bytes of disk for %d bytes, mostly unused: not sparse", st.Blocks*512, res.Size)
	}
	info := checkImage(t, res.Image)
	root, _ := info.Partition(info.RootPartition)
	if got := debugfsR(t, res.Image, root, "cat /etc/hostname"); !strings.Contains(got, "k5\n") {
		t.Errorf("hostname: %q", got)
	}
	for p, want := range map[string]string{
		"/etc/rancher/k3s/token":            "Mode:  0600",
		"/usr/local/bin/k3s":                "Mode:  0755",
		"/etc/rancher/k3s":                  "Mode:  0750",
		"/home/pirate/.ssh/authorized_keys": "User:  1000   Group:  1000",
		"/etc/new-by-edit":                  "Mode:  0640",
		"/etc/hosts":                        "Mode:  0644",
	} {
		if got := debugfsR(t, res.Image, root, "stat "+p); !strings.Contains(got, want) {
			t.Errorf("stat %s lacks %q:\n%.400s", p, want, got)
		}
	}
	if got := debugfsR(t, res.Image, root, "stat /usr/sbin/init"); !strings.Contains(got, "Type: regular") {
		t.Errorf("/usr/sbin/init is not the new file: %.300s", got)
	}
	if got := debugfsR(t, res.Image, root, "cat /usr/lib/systemd/systemd"); !strings.Contains(got, "\x7fELF") {
		t.Errorf("the symlink's target was written through: %.30q", got)
	}
	if got := debugfsR(t, res.Image, root, "cat /etc/hosts"); !strings.Contains(got, "127.0.1.1\tk5") {
		t.Errorf("hosts: %q", got)
	}
	if got := debugfsR(t, res.Image, root, "stat /etc/machine-id"); !strings.Contains(got, "File not found") {
		t.Errorf("machine-id not removed: %.200s", got)
	}
	if got := debugfsR(t, res.Image, root, "stat /etc/systemd/system/multi-user.target.wants/k3s-agent.service"); !strings.Contains(got, "Fast link dest: \"/etc/systemd/system/k3s-agent.service\"") {
		t.Errorf("symlink: %.400s", got)
	}
	dump := filepath.Join(t.TempDir(), "k3s")
	debugfsR(t, res.Image, root, "dump /usr/local/bin/k3s "+dump)
	if sha(mustRead(t, dump)) != sha(bytes.Repeat([]byte("k3s-binary\x00\x01\x02"), (3<<20)/13+1)[:3<<20]) {
		t.Error("k3s binary content differs")
	}
	boot, _ := info.Partition(info.BootPartition)
	bootDev := res.Image + "@@" + itoa(boot.Start)
	if got := fixture.Run(t, "mtype", "-i", bootDev, "::/cmdline.txt"); !strings.HasSuffix(got, "quiet init=/usr/lib/raspberrypi-sys-mods/firstboot cgroup_memory=1 cgroup_enable=memory\n") {
		t.Errorf("cmdline.txt: %q", got)
	}
	if got := fixture.Run(t, "mtype", "-i", bootDev, "::/imgbake/node.txt"); got != "node: k5\n" {
		t.Errorf("node.txt: %q", got)
	}
	if got := fixture.Run(t, "mdir", "-b", "-i", bootDev, "::/"); strings.Contains(got, "issue.txt") {
		t.Errorf("issue.txt not removed:\n%s", got)
	}
	// The secret is nowhere but in the root filesystem's file.
	m, err := manifest.Load(res.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	raw := mustRead(t, res.Manifest)
	if bytes.Contains(raw, []byte(testToken)) || bytes.Contains(raw, []byte(sha([]byte(testToken)))) {
		t.Error("manifest holds the secret or its hash")
	}
	for _, f := range m.Files {
		if f.Path == "/etc/rancher/k3s/token" && (!f.Secret || f.SHA256 != "") {
			t.Errorf("secret entry %+v", f)
		}
		if f.Path == "/usr/local/bin/k3s" && (f.SHA256 == "" || f.Size != 3<<20) {
			t.Errorf("k3s entry %+v", f)
		}
	}
	if m.Image.SHA256 != sha(mustRead(t, res.Image)) || m.Image.SHA256 != res.SHA256 || m.Base.SHA256 != base.InputSHA256 || m.Meta["node"] != "k5" {
		t.Errorf("manifest image/base/meta: %+v %+v %v", m.Image, m.Base, m.Meta)
	}
	if m.Base.OS.Family != "raspios" || len(m.Edits) != 3 || m.Edits[0].Desc != "add cgroup flags" {
		t.Errorf("manifest OS %+v edits %+v", m.Base.OS, m.Edits)
	}
	checkBmap(t, res, m)
}

// checkBmap checks the bmap's checksums against the image and that the
// image, with everything outside the bmap's ranges zeroed, still passes
// fsck with the same files.
func checkBmap(t *testing.T, res *Result, m *manifest.Manifest) {
	t.Helper()
	f, err := os.Open(res.Bmap)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bm, err := bmap.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	img, _ := os.Open(res.Image)
	defer img.Close()
	if bm.ImageSize != res.Size || len(bm.Ranges) != len(m.Ranges) {
		t.Fatalf("bmap size %d ranges %d; image %d, manifest ranges %d", bm.ImageSize, len(bm.Ranges), res.Size, len(m.Ranges))
	}
	for i, r := range bm.Ranges {
		s, err := bm.Checksum(img, r)
		if err != nil || s != r.SHA256 || m.Ranges[i].SHA256 != s {
			t.Fatalf("range %d checksum mismatch (%v)", i, err)
		}
	}
	if bm.MappedBytes() > res.Size/2 {
		t.Errorf("bmap maps %d of %d bytes: the image is mostly empty", bm.MappedBytes(), res.Size)
	}
	// Copy only the mapped ranges into a zeroed file: it must be the same
	// filesystems.
	cp := filepath.Join(t.TempDir(), "flashed.img")
	dst, _ := os.Create(cp)
	dst.Truncate(res.Size)
	for _, r := range bm.ByteRanges() {
		buf := make([]byte, r.Length)
		img.ReadAt(buf, r.Offset)
		dst.WriteAt(buf, r.Offset)
	}
	dst.Close()
	info := checkImage(t, cp)
	root, _ := info.Partition(info.RootPartition)
	if got := debugfsR(t, cp, root, "cat /etc/hostname"); !strings.Contains(got, "k5") {
		t.Errorf("hostname after bmap copy: %q", got)
	}
}

func TestBuildFailureLeavesNothing(t *testing.T) {
	base := prepared(t, fixture.RaspiOSBookwormArm64, false)
	for name, p := range map[string]*plan.Plan{
		"missing source": {Entries: []plan.Entry{{Part: plan.Root, Path: "/usr/local/bin/k3s", Kind: plan.File, Source: "/nonexistent/k3s"}}},
		"failing edit": {Edits: []plan.Edit{{Part: plan.Boot, Path: "/cmdline.txt", Desc: "x", Func: func([]byte) ([]byte, error) {
			return nil, errors.New("edit refused")
		}}}},
		"secret on boot": {Entries: []plan.Entry{{Part: plan.Boot, Path: "/token", Kind: plan.File, Data: []byte("s"), Secret: true}}},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "k5.img")
			_, err := Build(context.Background(), BuildOptions{Base: base, Output: out, Plan: p, Epoch: time.Unix(1, 0)})
			if err == nil {
				t.Fatal("Build succeeded")
			}
			assertOnly(t, dir)
		})
	}
	// Cancelled context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	if _, err := Build(ctx, BuildOptions{Base: base, Output: filepath.Join(dir, "k5.img"), Plan: &plan.Plan{}}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled build: %v", err)
	}
	assertOnly(t, dir)
}

func TestBuildGrowsWhenRootTooFull(t *testing.T) {
	fixture.RequireTools(t, "debugfs")
	for _, name := range []string{fixture.RaspiOSBookwormArm64, fixture.ArmbianBookwormArm64} {
		t.Run(name, func(t *testing.T) {
			base := prepared(t, name, false)
			info, err := Inspect(base.Path)
			if err != nil {
				t.Fatal(err)
			}
			before := *info
			before.Partitions = slices.Clone(info.Partitions)
			// A binary larger than the free space.
			p := testPlan(t, info.RootFree+8<<20)
			p.Entries = p.Entries[:4]
			p.Edits, p.Removes = nil, nil
			out := filepath.Join(t.TempDir(), "k5.img")
			res, err := Build(context.Background(), BuildOptions{Base: base, Info: info, Output: out, Plan: p, Epoch: time.Unix(1700000000, 0)})
			if err != nil {
				t.Fatal(err)
			}
			if !res.Grown || res.Size <= base.Size {
				t.Fatalf("image not grown: %+v (base %d)", res, base.Size)
			}
			got := checkImage(t, res.Image)
			root, _ := got.Partition(got.RootPartition)
			if root.Start+root.Size != res.Size || got.RootFree < growMargin/2 {
				t.Errorf("root partition %+v, free %d, image %d", root, got.RootFree, res.Size)
			}
			// An explicit size grows further, with the same Info: Build must
			// not have changed it.
			res2, err := Build(context.Background(), BuildOptions{Base: base, Info: info, Output: out, Plan: &plan.Plan{}, Size: base.Size + 100<<20, Epoch: time.Unix(1, 0)})
			if err != nil {
				t.Fatal(err)
			}
			if res2.Size != base.Size+100<<20 {
				t.Errorf("size %d, want %d", res2.Size, base.Size+100<<20)
			}
			checkImage(t, res2.Image)
			// And a build that needs no growing sees the base's partitions.
			res3, err := Build(context.Background(), BuildOptions{Base: base, Info: info, Output: out, Plan: &plan.Plan{}, Epoch: time.Unix(1, 0)})
			if err != nil {
				t.Fatal(err)
			}
			if res3.Grown || res3.Size != base.Size {
				t.Errorf("empty plan: %+v, base size %d", res3, base.Size)
			}
			if d := cmp.Diff(before, *info); d != "" {
				t.Errorf("Build changed the caller's Info (-before +after):\n%s", d)
			}
			checkImage(t, res3.Image)
		})
	}
}

// TestBuildReusesBaseChecksums: a build from a prepared base (whose cell
// checksums are cached, and reused for the cells the node leaves
// unchanged) writes the same block map and manifest as a build that hashes
// every cell afresh, and the range checksums are those of the image's
// bytes; also when the image grows. A damaged cache file is not believed.
func TestBuildReusesBaseChecksums(t *testing.T) {
	fixture.RequireTools(t, "debugfs")
	in := fixture.Cached(t, fixture.RaspiOSBookwormArm64)
	cache := filepath.Join(t.TempDir(), "cache")
	base, err := PrepareBase(context.Background(), in, cache, PrepareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if base.cells == nil {
		t.Fatal("no cell checksums after PrepareBase")
	}
	cacheFile := filepath.Join(cache, base.InputSHA256+"-"+itoa(base.Size)+".cells")
	fresh := *base
	fresh.cells = nil
	p := testPlan(t, 3<<20)
	for name, size := range map[string]int64{"small": 0, "grown": base.Size + 64<<20 + 12288} {
		t.Run(name, func(t *testing.T) {
			var outs [2]string
			var last *Result
			var logs [2]testlog.Buffer
			for i, b := range []*Base{base, &fresh} {
				out := filepath.Join(t.TempDir(), "k5.img")
				log := slog.New(slog.NewTextHandler(&logs[i], &slog.HandlerOptions{Level: slog.LevelDebug}))
				res, err := Build(context.Background(), BuildOptions{Base: b, Output: out, Plan: p, Size: size, Epoch: time.Unix(1700000000, 0), Log: log})
				if err != nil {
					t.Fatal(err)
				}
				outs[i], last = out, res
			}
			// The node changes a few MiB: only those cells are read again.
			t.Logf("%s", regexp.MustCompile(`computed block map.*`).FindString(logs[0].String()))
			re := regexp.MustCompile(`cells=(\d+) rehashed_cells=(\d+)`)
			reused, all := re.FindStringSubmatch(logs[0].String()), re.FindStringSubmatch(logs[1].String())
			if reused == nil || all == nil || all[2] != all[1] || atoi(t, reused[2]) > 64 || reused[1] != all[1] {
				t.Errorf("cells (mapped, rehashed): reusing %v, afresh %v; want few rehashed when reusing", reused, all)
			}
			if name == "grown" && !last.Grown {
				t.Fatal("image not grown")
			}
			for _, suffix := range []string{"", ".bmap", ".manifest.json"} {
				if !bytes.Equal(mustRead(t, outs[0]+suffix), mustRead(t, outs[1]+suffix)) {
					t.Errorf("k5.img%s differs between reused and fresh checksums", suffix)
				}
			}
			m, err := manifest.Load(last.Manifest)
			if err != nil {
				t.Fatal(err)
			}
			if m.Image.SHA256 != "" || last.SHA256 != "" {
				t.Error("whole-image sha256 computed without being asked for")
			}
			checkBmap(t, last, m)
		})
	}
	// A cache file for another image, or a truncated one, is recomputed.
	good := mustRead(t, cacheFile)
	for _, bad := range [][]byte{good[:len(good)-5], append([]byte("imgbake-cells 1 1048576 12\n"), good[40:]...)} {
		os.WriteFile(cacheFile, bad, 0o644)
		b2, err := PrepareBase(context.Background(), in, cache, PrepareOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(b2.cells.sums, base.cells.sums) {
			t.Error("a damaged cache file was believed")
		}
		if !bytes.Equal(mustRead(t, cacheFile), good) {
			t.Error("the damaged cache file was not rewritten")
		}
	}
}

// cancelAt is a slog handler that cancels a context when a record with
// the message msg is logged, after delay.
type cancelAt struct {
	msg    string
	delay  time.Duration
	cancel context.CancelFunc
	at     chan time.Time
}

func (c *cancelAt) Enabled(context.Context, slog.Level) bool { return true }
func (c *cancelAt) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *cancelAt) WithGroup(string) slog.Handler            { return c }
func (c *cancelAt) Handle(_ context.Context, r slog.Record) error {
	if r.Message == c.msg && c.delay == 0 {
		c.at <- time.Now()
		c.cancel()
	} else if r.Message == c.msg {
		go func() {
			time.Sleep(c.delay)
			c.at <- time.Now()
			c.cancel()
		}()
	}
	return nil
}

// TestBuildInterruptedLeavesNothing cancels a build (as Ctrl-C does) in
// each phase: copying, applying, checksumming, compressing, and in the
// middle of compressing xz (the slowest); the build stops with context.Canceled, soon, and leaves no
// file behind.
func TestBuildInterruptedLeavesNothing(t *testing.T) {
	base := prepared(t, fixture.RaspiOSBookwormArm64, false)
	p := testPlan(t, 3<<20)
	for _, phase := range []struct{ msg, compress string }{
		{"copied base image", ""}, {"applied plan", ""}, {"computed bmap and checksum", "zst"},
		{"compressing image", "xz"}, {"compressing image", "zst"},
	} {
		t.Run(phase.msg+"/"+phase.compress, func(t *testing.T) {
			dir := t.TempDir()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h := &cancelAt{msg: phase.msg, cancel: cancel, at: make(chan time.Time, 1)}
			if phase.msg == "compressing image" && phase.compress == "xz" {
				h.delay = 300 * time.Millisecond
			}
			_, err := Build(ctx, BuildOptions{Base: base, Output: filepath.Join(dir, "k5.img"), Plan: p, Compress: phase.compress,
				Epoch: time.Unix(1, 0), Log: slog.New(h)})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Build: %v, want context.Canceled", err)
			}
			// Not a timing test: generous, for a loaded machine; the point
			// is that a chunk being compressed does not run to its end.
			if took := time.Since(<-h.at); took > 5*time.Second {
				t.Errorf("Build returned %v after the cancel", took)
			}
			assertOnly(t, dir)
		})
	}
}

// TestBuildReproducible builds the same image in two processes with
// different time zones and umasks and compares the outputs byte for byte.
func TestBuildReproducible(t *testing.T) {
	if out := os.Getenv("IMGBAKE_TEST_BUILD_OUT"); out != "" {
		syscall.Umask(0o077)
		base := &Base{}
		*base = Base{Path: os.Getenv("IMGBAKE_TEST_BASE"), InputSHA256: "x", Format: "raw"}
		p := testPlan(t, 1<<20)
		for _, c := range []string{"", "xz", "zst"} {
			if _, err := Build(context.Background(), BuildOptions{Base: base, Output: out + c, Plan: p, Compress: c,
				Epoch: time.Unix(1700000000, 0), Meta: map[string]string{"b": "2", "a": "1"}}); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	fixture.RequireTools(t)
	base := fixture.Cached(t, fixture.RaspiOSTrixieArm64)
	dirs := []string{t.TempDir(), t.TempDir()}
	for i, tz := range []string{"America/Los_Angeles", "Asia/Kolkata"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBuildReproducible$")
		cmd.Env = append(os.Environ(), "TZ="+tz, "IMGBAKE_TEST_BASE="+base, "IMGBAKE_TEST_BUILD_OUT="+filepath.Join(dirs[i], "k5.img"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build in TZ=%s: %v\n%s", tz, err, out)
		}
	}
	for _, f := range []string{"k5.img", "k5.img.bmap", "k5.img.manifest.json", "k5.imgxz.xz", "k5.imgzst.zst"} {
		a, b := mustRead(t, filepath.Join(dirs[0], f)), mustRead(t, filepath.Join(dirs[1], f))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between the two builds", f)
		}
	}
	// The compressed images decompress to the raw one.
	raw := sha(mustRead(t, filepath.Join(dirs[0], "k5.img")))
	for _, c := range [][]string{{"xz", "-dc"}, {"zstd", "-dcq"}} {
		ext := map[string]string{"xz": "xz", "zstd": "zst"}[c[0]]
		got, err := exec.Command(c[0], c[1], filepath.Join(dirs[0], "k5.img"+ext+"."+ext)).Output()
		if err != nil {
			t.Fatalf("%s: %v", c[0], err)
		}
		if sha(got) != raw {
			t.Errorf("%s output differs from the raw image", c[0])
		}
	}
}

// TestHashFileSparse checks that hashing a sparse file, whose holes are
// hashed from memory, gives sha256sum's answer.
func TestHashFileSparse(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sparse.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 9<<20 + 12345
	for _, off := range []int64{0, 3<<20 + 17, 8 << 20} {
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5, byte(off)}, 40000), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	got, err := hashFile(context.Background(), f, size, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got != hex.EncodeToString(want[:]) {
		t.Fatalf("hashFile = %s, want %x", got, want)
	}
}
