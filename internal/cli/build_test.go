package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/internal/fixture"
)

const testVersion = "v1.36.4+k3s1"

// crossELF cross-compiles a tiny program for an image arch (arm64, armhf).
func crossELF(t *testing.T, arch string) []byte {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\nfunc main() { println(\"fake k3s\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"GOOS=linux", "CGO_ENABLED=0", "GO111MODULE=off", "GOFLAGS=", "GOARCH=arm64"}
	if arch == "armhf" {
		env = append(env, "GOARCH=arm", "GOARM=7")
	}
	bin := filepath.Join(dir, "k3s")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, src)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("cannot cross-compile a fake k3s (%v): %s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// fakeRelease serves a k3s release on loopback: /<version>/k3s-<arch> and
// its checksum file.
func fakeRelease(t *testing.T, bins map[string][]byte) *httptest.Server {
	files := map[string][]byte{}
	for arch, data := range bins {
		sum := sha256.Sum256(data)
		asset, sums := "k3s-arm64", "sha256sum-arm64.txt"
		if arch == "armhf" {
			asset, sums = "k3s-armhf", "sha256sum-arm.txt"
		}
		files[asset] = data
		files[sums] = []byte(hex.EncodeToString(sum[:]) + "  " + asset + "\n")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dir, name := filepath.Split(r.URL.EscapedPath())
		data, ok := files[name]
		if !ok || dir != "/"+strings.ReplaceAll(testVersion, "+", "%2B")+"/" {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// cluster writes a cluster file (and secrets via init) into dir.
func clusterDir(t *testing.T, base, releaseURL string) (dir, cfg, token string) {
	t.Helper()
	dir = t.TempDir()
	cfg = filepath.Join(dir, "imgbake.yaml")
	if code, _, e := run(t, nil, "init", "--config", cfg); code != 0 {
		t.Fatalf("init: %s", e)
	}
	s, err := config.LoadSecrets(filepath.Join(dir, "imgbake.secrets.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf(`server: 192.168.1.10
k3s:
  version: %s
  release-url: %s
base: %s
cache-dir: cache
ssh:
  authorized-keys:
    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRlc3RrZXktdGVzdGtleS10ZXN0a2V5LXRlc3RrZXkt admin@laptop
nodes:
  - name: k1
    profile: server
    model: pi4
    address: 192.168.1.10/24
    gateway: 192.168.1.1
    dns: [192.168.1.1]
  - name: k5
    profile: worker
    model: pi4
    labels:
      example.com/disk: ssd
      node-role.kubernetes.io/storage: "true"
    taints: ["example.com/disk=ssd:PreferNoSchedule"]
  - name: zero
    profile: worker
    model: pi0w
`, testVersion, releaseURL, base)
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, cfg, s.Token
}

// partitions reads the MBR: (offset, size) in bytes of the primary partitions.
func partitions(t *testing.T, img string) [][2]int64 {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mbr := make([]byte, 512)
	if _, err := io.ReadFull(f, mbr); err != nil || mbr[510] != 0x55 || mbr[511] != 0xaa {
		t.Fatalf("%s: no MBR (%v)", img, err)
	}
	var out [][2]int64
	for i := 0; i < 4; i++ {
		e := mbr[446+16*i:]
		start, n := binary.LittleEndian.Uint32(e[8:]), binary.LittleEndian.Uint32(e[12:])
		if e[4] != 0 && n != 0 {
			out = append(out, [2]int64{int64(start) * 512, int64(n) * 512})
		}
	}
	return out
}

// extract copies a partition into its own sparse file.
func extract(t *testing.T, img string, p [2]int64) string {
	t.Helper()
	src, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.CreateTemp(t.TempDir(), "part*.img")
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for off := int64(0); off < p[1]; off += int64(len(buf)) {
		n := min(int64(len(buf)), p[1]-off)
		if _, err := src.ReadAt(buf[:n], p[0]+off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := dst.WriteAt(buf[:n], off); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := dst.Truncate(p[1]); err != nil {
		t.Fatal(err)
	}
	return dst.Name()
}

func tool(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func debugfsCat(t *testing.T, root, path string) string {
	t.Helper()
	return tool(t, "debugfs", "-R", "cat "+path, root)
}

func debugfsStat(t *testing.T, root, path string) string {
	t.Helper()
	out := tool(t, "debugfs", "-R", "stat "+path, root)
	if !strings.Contains(out, "Inode:") {
		t.Fatalf("%s missing from the image", path)
	}
	return out
}

func TestBuildEndToEnd(t *testing.T) {
	fixture.RequireTools(t, "e2fsck", "debugfs", "fsck.vfat", "mtype")
	base := fixture.Cached(t, fixture.RaspiOSBookwormArm64)
	srv := fakeRelease(t, map[string][]byte{"arm64": crossELF(t, "arm64")})
	dir, cfg, token := clusterDir(t, base, srv.URL)
	env := map[string]string{"HOME": dir, "SOURCE_DATE_EPOCH": "1700000000"}

	// A listed node with another profile, an unlisted node without one, an
	// ARMv6 node: refused before anything is built.
	if code, _, e := run(t, env, "build", "-c", cfg, "--profile", "server", "k5"); code != 1 || !strings.Contains(e, "listed in "+cfg+":") || !strings.Contains(e, "with profile worker, not server") {
		t.Errorf("wrong profile: %d %s", code, e)
	}
	if code, _, e := run(t, env, "build", "-c", cfg, "k9"); code != 2 || !strings.Contains(e, "--profile worker k9") {
		t.Errorf("unlisted without profile: %d %s", code, e)
	}
	if code, _, e := run(t, env, "build", "-c", cfg, "zero"); code != 1 || !strings.Contains(e, "k3s needs ARMv7 or newer") {
		t.Errorf("pi0w: %d %s", code, e)
	}

	code, out, errOut := run(t, env, "build", "-c", cfg, "-j", "2", "k1", "k5")
	if code != 0 {
		t.Fatalf("build: exit %d\n%s", code, errOut)
	}
	if i1, i5 := strings.Index(out, "k1: "), strings.Index(out, "k5: "); i1 < 0 || i5 < i1 {
		t.Errorf("built at once, the nodes' lines are not in order:\n%s", out)
	}
	for _, s := range []string{out, errOut} {
		if strings.Contains(s, token) {
			t.Fatal("the token was printed")
		}
	}
	// An unlisted node, with a local k3s binary, airgap images and --size.
	armhf := filepath.Join(dir, "k3s-armhf")
	os.WriteFile(armhf, crossELF(t, "armhf"), 0o755)
	if code, _, e := run(t, env, "build", "-c", cfg, "--profile", "worker", "--k3s-binary", armhf, "k9"); code != 1 || !strings.Contains(e, "use the k3s-arm64 binary") {
		t.Errorf("armhf k3s for an arm64 image: %d %s", code, e)
	}
	arm64 := filepath.Join(dir, "k3s-arm64")
	os.WriteFile(arm64, crossELF(t, "arm64"), 0o755)
	airgap := filepath.Join(dir, "k3s-airgap-images-arm64.tar")
	os.WriteFile(airgap, bytes.Repeat([]byte("airgap"), 1000), 0o644)
	code, out2, e2 := run(t, env, "build", "-c", cfg, "--profile", "worker", "--k3s-binary", arm64, "--airgap-images", airgap, "--size", "512M", "k9")
	if code != 0 || !strings.Contains(out2, "k9") {
		t.Fatalf("unlisted node from profile: %d %s %s", code, out2, e2)
	}
	if st, err := os.Stat(filepath.Join(dir, "out", "k9.img")); err != nil || st.Size() < 512<<20 {
		t.Errorf("--size 512M: %v", err)
	}
	k9root := extract(t, filepath.Join(dir, "out", "k9.img"), partitions(t, filepath.Join(dir, "out", "k9.img"))[1])
	if st := debugfsStat(t, k9root, "/var/lib/rancher/k3s/agent/images/k3s-airgap-images-arm64.tar"); !strings.Contains(st, "Size: 6000") {
		t.Errorf("airgap images:\n%s", st)
	}
	for _, node := range []string{"k1", "k5", "k9"} {
		img := filepath.Join(dir, "out", node+".img")
		checkImage(t, img, node, token)
		for _, side := range []string{".bmap", ".manifest.json"} {
			data, err := os.ReadFile(img + side)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(data, []byte(token)) {
				t.Errorf("%s holds the token", img+side)
			}
		}
	}
	k5root := extract(t, filepath.Join(dir, "out", "k5.img"), partitions(t, filepath.Join(dir, "out", "k5.img"))[1])
	agent := debugfsCat(t, k5root, "/etc/rancher/k3s/config.yaml")
	for _, want := range []string{"server: https://192.168.1.10:6443", "node-name: k5", "example.com/disk=ssd", "imgbake.io/role=storage", "example.com/disk=ssd:PreferNoSchedule"} {
		if !strings.Contains(agent, want) {
			t.Errorf("k5 config.yaml lacks %q:\n%s", want, agent)
		}
	}
	debugfsStat(t, k5root, "/etc/systemd/system/multi-user.target.wants/k3s-agent.service")
	k1root := extract(t, filepath.Join(dir, "out", "k1.img"), partitions(t, filepath.Join(dir, "out", "k1.img"))[1])
	srvCfg := debugfsCat(t, k1root, "/etc/rancher/k3s/config.yaml")
	if strings.Contains(srvCfg, "server:") || !strings.Contains(srvCfg, "tls-san:") {
		t.Errorf("server config.yaml:\n%s", srvCfg)
	}
	debugfsStat(t, k1root, "/etc/systemd/system/timers.target.wants/imgbake-role-labels.timer")
	if nm := debugfsCat(t, k1root, "/etc/NetworkManager/system-connections/imgbake-wired.nmconnection"); !strings.Contains(nm, "address1=192.168.1.10/24,192.168.1.1") {
		t.Errorf("k1 static address:\n%s", nm)
	}

	// Reproducible: the same inputs give the same image.
	first, _ := os.ReadFile(filepath.Join(dir, "out", "k5.img"))
	if code, _, e := run(t, env, "build", "-c", cfg, "k5"); code != 0 {
		t.Fatalf("rebuild: %s", e)
	}
	second, _ := os.ReadFile(filepath.Join(dir, "out", "k5.img"))
	if !bytes.Equal(first, second) {
		t.Error("rebuilding k5 gave a different image")
	}
	// Built one at a time, k1 is the image built beside k5 above.
	firstK1, _ := os.ReadFile(filepath.Join(dir, "out", "k1.img"))
	if code, _, e := run(t, env, "build", "-c", cfg, "-j", "1", "k1"); code != 0 {
		t.Fatalf("rebuild: %s", e)
	}
	if second, _ := os.ReadFile(filepath.Join(dir, "out", "k1.img")); !bytes.Equal(firstK1, second) {
		t.Error("k1 built alone differs from k1 built at the same time as k5")
	}
}

// TestBuildNodesScheduling: buildNodes runs at most parallel builds at
// once, prints each node's lines in the nodes' order whatever order they
// finish in, names every failed node and starts none after a failure, and
// on an interrupt returns at once naming the images not written.
func TestBuildNodesScheduling(t *testing.T) {
	names := []string{"n1", "n2", "n3", "n4", "n5", "n6"}
	var inFlight, most atomic.Int32
	work := func(fail map[int]bool) func(i int, prog, out, errOut io.Writer) error {
		return func(i int, prog, out, errOut io.Writer) error {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(time.Duration(len(names)-i) * 15 * time.Millisecond) // the first finish last
			if fail[i] {
				return fmt.Errorf("building %s: disk full", names[i])
			}
			fmt.Fprintf(out, "%s: built\n", names[i])
			fmt.Fprintf(errOut, "%s: warning\n", names[i])
			return nil
		}
	}
	var o, e bytes.Buffer
	a := &App{Stdout: &o, Stderr: &e}
	if err := a.buildNodes(context.Background(), names, "out", 2, work(nil)); err != nil {
		t.Fatal(err)
	}
	var want, wantErr string
	for _, n := range names {
		want += n + ": built\n"
		wantErr += n + ": warning\n"
	}
	if o.String() != want || e.String() != wantErr {
		t.Errorf("output not in the nodes' order:\n%s\n%s", o.String(), e.String())
	}
	if most.Load() != 2 {
		t.Errorf("%d builds at once, want 2", most.Load())
	}

	// n2 and n3 fail (both in flight at once, n1 built before): both are
	// named, and none is started after.
	o.Reset()
	e.Reset()
	fail := map[int]bool{1: true, 2: true}
	err := a.buildNodes(context.Background(), names, "out", 2, func(i int, prog, out, errOut io.Writer) error {
		if i == 0 {
			fmt.Fprintf(out, "n1: built\n")
			return nil
		}
		return work(fail)(i, prog, out, errOut)
	})
	if err == nil || !strings.Contains(err.Error(), "2 of 6 nodes failed: n2, n3; not built after the failure: n4, n5, n6") {
		t.Errorf("error %v", err)
	}
	for _, s := range []string{"imgbake: building n2: disk full", "imgbake: building n3: disk full"} {
		if !strings.Contains(e.String(), s) {
			t.Errorf("stderr lacks %q:\n%s", s, e.String())
		}
	}
	if o.String() != "n1: built\n" {
		t.Errorf("stdout after a failure:\n%s", o.String())
	}

	// One node of one: its own error, unchanged.
	err = a.buildNodes(context.Background(), names[:1], "out", 2, work(map[int]bool{0: true}))
	if err == nil || err.Error() != "building n1: disk full" {
		t.Errorf("single failure: %v", err)
	}

	// Ctrl-C: the builds in flight stop, none starts, and buildNodes
	// returns at once naming what was not written.
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{}, len(names))
	go func() { <-started; <-started; cancel() }()
	t0 := time.Now()
	err = a.buildNodes(ctx, names, "out", 2, func(i int, prog, out, errOut io.Writer) error {
		started <- struct{}{}
		<-ctx.Done()
		return fmt.Errorf("building %s: %w", names[i], ctx.Err())
	})
	if took := time.Since(t0); took > time.Second {
		t.Errorf("interrupt took %v", took)
	}
	if err == nil || !strings.Contains(err.Error(), "interrupted: out/n1.img, out/n2.img, out/n3.img, out/n4.img, out/n5.img, out/n6.img were not written") {
		t.Errorf("interrupt: %v", err)
	}
}

// checkImage checks one built image with the real tools.
func checkImage(t *testing.T, img, node, token string) {
	t.Helper()
	parts := partitions(t, img)
	if len(parts) < 2 {
		t.Fatalf("%s: %d partitions", img, len(parts))
	}
	boot, root := extract(t, img, parts[0]), extract(t, img, parts[1])
	tool(t, "fsck.vfat", "-n", boot)
	tool(t, "e2fsck", "-fn", root)

	bootData, err := os.ReadFile(boot)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(bootData, []byte(token)) {
		t.Errorf("%s: the token is on the FAT partition", node)
	}
	cmdline := tool(t, "mtype", "-i", boot, "::/cmdline.txt")
	if strings.Count(cmdline, "cgroup_memory=1") != 1 || strings.Count(cmdline, "cgroup_enable=memory") != 1 || strings.Count(strings.TrimSpace(cmdline), "\n") != 0 {
		t.Errorf("%s cmdline.txt: %q", node, cmdline)
	}

	cfg := debugfsStat(t, root, "/etc/rancher/k3s/config.yaml")
	if !strings.Contains(cfg, "Mode:  0600") || !strings.Contains(cfg, "User:     0") {
		t.Errorf("%s config.yaml: want mode 0600 root:\n%s", node, cfg)
	}
	if c := debugfsCat(t, root, "/etc/rancher/k3s/config.yaml"); !strings.Contains(c, "token: "+token) && !strings.Contains(c, "token: \""+token+"\"") {
		t.Errorf("%s config.yaml has no token", node)
	}
	if pw := debugfsStat(t, root, "/etc/rancher/node/password"); !strings.Contains(pw, "Mode:  0600") {
		t.Errorf("%s node password mode:\n%s", node, pw)
	}
	if h := debugfsCat(t, root, "/etc/hostname"); h != node+"\n" {
		t.Errorf("%s /etc/hostname = %q", node, h)
	}
	if h := debugfsCat(t, root, "/etc/hosts"); !strings.Contains(h, "127.0.1.1\t"+node) || strings.Contains(h, "raspberrypi") {
		t.Errorf("%s /etc/hosts:\n%s", node, h)
	}
	if st := debugfsStat(t, root, "/usr/local/bin/kubectl"); !strings.Contains(st, "Type: symlink") || !strings.Contains(st, `"k3s"`) {
		t.Errorf("%s kubectl symlink:\n%s", node, st)
	}
	if st := debugfsStat(t, root, "/usr/local/bin/k3s"); !strings.Contains(st, "Mode:  0755") {
		t.Errorf("%s k3s mode:\n%s", node, st)
	}
	unit := debugfsCat(t, root, "/etc/systemd/system/imgbake-firstboot.service")
	if !strings.Contains(unit, "ConditionPathExists=!/var/lib/imgbake/firstboot.done") {
		t.Errorf("%s first-boot unit:\n%s", node, unit)
	}
	if keys := debugfsCat(t, root, "/root/.ssh/authorized_keys"); !strings.Contains(keys, "admin@laptop") {
		t.Errorf("%s authorized_keys: %q", node, keys)
	}
}

// TestBuildCloudInit builds the server from a Trixie base (cloud-init
// seeds on the FAT) with a static address: the seeds name the node and its
// address, and hold no secret. It also builds a compressed image.
func TestBuildCloudInit(t *testing.T) {
	fixture.RequireTools(t, "e2fsck", "debugfs", "fsck.vfat", "mtype", "zstd")
	base := fixture.Cached(t, fixture.RaspiOSTrixieArm64)
	srv := fakeRelease(t, map[string][]byte{"arm64": crossELF(t, "arm64")})
	dir, cfg, token := clusterDir(t, base, srv.URL)
	env := map[string]string{"HOME": dir}
	if code, _, e := run(t, env, "build", "-c", cfg, "k1"); code != 0 {
		t.Fatalf("build: %s", e)
	}
	img := filepath.Join(dir, "out", "k1.img")
	checkImage(t, img, "k1", token)
	boot := extract(t, img, partitions(t, img)[0])
	for file, want := range map[string]string{
		"user-data":      "hostname: k1",
		"meta-data":      "local-hostname: k1",
		"network-config": "192.168.1.10/24",
	} {
		if got := tool(t, "mtype", "-i", boot, "::/"+file); !strings.Contains(got, want) {
			t.Errorf("%s lacks %q:\n%s", file, want, got)
		}
	}
	// Reproducible by default: no SOURCE_DATE_EPOCH, same bytes.
	first, _ := os.ReadFile(img)
	if code, _, e := run(t, env, "build", "-c", cfg, "k1"); code != 0 {
		t.Fatalf("rebuild: %s", e)
	}
	if second, _ := os.ReadFile(img); !bytes.Equal(first, second) {
		t.Error("two builds without SOURCE_DATE_EPOCH differ")
	}
	code, out, e := run(t, env, "build", "-c", cfg, "--compress", "zst", "k5")
	if code != 0 || !strings.Contains(out, "k5.img.zst") {
		t.Fatalf("build --compress zst: %d %s %s", code, out, e)
	}
	tool(t, "zstd", "-t", filepath.Join(dir, "out", "k5.img.zst"))
}

// TestBuildReleaseErrors: a version the release server does not have gives
// exit 1 and advice, and no image.
func TestBuildReleaseErrors(t *testing.T) {
	fixture.RequireTools(t)
	base := fixture.Cached(t, fixture.RaspiOSBookwormArm64)
	srv := fakeRelease(t, map[string][]byte{"arm64": crossELF(t, "arm64")})
	dir, cfg, _ := clusterDir(t, base, srv.URL)
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, bytes.Replace(data, []byte(testVersion), []byte("v1.30.0+k3s1"), 1), 0o644)
	code, _, e := run(t, map[string]string{"HOME": dir}, "build", "-c", cfg, "k5")
	if code != 1 || !strings.Contains(e, "404") || !strings.Contains(e, "release tag") {
		t.Errorf("missing release: %d %s", code, e)
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "k5.img")); err == nil {
		t.Error("an image was written despite the error")
	}
	if !strings.Contains(e, "warning: "+cfg+":3: k3s v1.30.0+k3s1 is long out of support") {
		t.Errorf("no warning for an out-of-support k3s: %s", e)
	}
	os.WriteFile(cfg, data, 0o644)

	// The cluster is checked before anything is baked.
	code, _, e = run(t, map[string]string{"HOME": dir}, "build", "-c", cfg, "--size", "1M", "k5")
	if code != 2 || !strings.Contains(e, "--size 1M (1.0 MiB) is smaller than the base image") {
		t.Errorf("--size below the base: %d %s", code, e)
	}
	os.WriteFile(cfg, bytes.Replace(data, []byte("address: 192.168.1.10/24"), []byte("address: 192.168.1.11/24"), 1), 0o644)
	code, _, e = run(t, map[string]string{"HOME": dir}, "build", "-c", cfg, "k5")
	if code != 1 || !strings.Contains(e, cfg+":14: nodes[0].address: k1 is the server (profile server) at 192.168.1.11, but agents join server: 192.168.1.10 (line 1)") {
		t.Errorf("server address: %d %s", code, e)
	}
	os.WriteFile(cfg, data, 0o644)
	if _, err := os.Stat(filepath.Join(dir, "out", "k5.img")); err == nil {
		t.Error("an image was written despite the errors")
	}

	if err := os.Chmod(filepath.Join(dir, "imgbake.secrets.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, e = run(t, map[string]string{"HOME": dir}, "build", "-c", cfg, "k5")
	if code != 1 || !strings.Contains(e, "chmod 600") {
		t.Errorf("readable secrets: %d %s", code, e)
	}
}

// TestBuildArmhfWarnsOnce builds two unlisted nodes (no model) from the
// 32-bit HypriotOS base with an armhf release: the ARMv6 warning is printed
// once, and the HypriotOS cloud-init seeds name each node.
func TestBuildArmhfWarnsOnce(t *testing.T) {
	fixture.RequireTools(t, "e2fsck", "debugfs", "fsck.vfat", "mtype")
	base := fixture.Cached(t, fixture.HypriotOSArmhf)
	srv := fakeRelease(t, map[string][]byte{"armhf": crossELF(t, "armhf")})
	dir, cfg, token := clusterDir(t, base, srv.URL)
	code, out, e := run(t, map[string]string{"HOME": dir}, "build", "-c", cfg, "--profile", "worker", "k8", "k9")
	if code != 0 {
		t.Fatalf("build: %d %s", code, e)
	}
	if n := strings.Count(e, "warning:"); n != 1 || !strings.Contains(e, "ARMv7") {
		t.Errorf("want one ARMv6 warning, got %d:\n%s", n, e)
	}
	if !strings.Contains(out, "k8: ") || !strings.Contains(out, "k9: ") {
		t.Errorf("stdout: %s", out)
	}
	for _, node := range []string{"k8", "k9"} {
		img := filepath.Join(dir, "out", node+".img")
		checkImage(t, img, node, token)
		boot := extract(t, img, partitions(t, img)[0])
		if ud := tool(t, "mtype", "-i", boot, "::/user-data"); !strings.Contains(ud, "hostname: "+node) {
			t.Errorf("%s user-data:\n%s", node, ud)
		}
	}
}

// TestBuildParallelCtrlC: Ctrl-C (SIGINT to the imgbake binary) while
// several nodes are being built at once stops it within a second; every
// node's set is then either complete (it verifies) or absent, and no
// temporary file is left in out/ or the cache.
func TestBuildParallelCtrlC(t *testing.T) {
	dir, cfg, k3sBin := localBuild(t)
	bin := imgbakeBinary(t)
	out := filepath.Join(dir, "out")
	nodes := []string{"w1", "w2", "w3", "w4", "w5", "w6"}
	var stderr bytes.Buffer
	start := func(nodes ...string) *exec.Cmd {
		cmd := exec.Command(bin, append([]string{"build", "-c", cfg, "--k3s-binary", k3sBin, "--profile", "worker", "-j", "2"}, nodes...)...)
		cmd.Env = append(os.Environ(), "HOME="+dir, "SOURCE_DATE_EPOCH=1700000000")
		stderr.Reset()
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	// The base is prepared (decompressed, checked) by a first build.
	if err := start("w0").Wait(); err != nil {
		t.Fatalf("first build: %v", err)
	}
	for _, when := range []struct {
		name  string
		ready func() bool
	}{
		{"at the first temporary file", func() bool { return len(leftovers(out)) > 0 }},
		{"once w1 is complete", func() bool { return fileExists(filepath.Join(out, "w1.img.manifest.json")) }},
	} {
		t.Run(when.name, func(t *testing.T) {
			for _, n := range nodes { // each round starts from nothing
				for _, side := range []string{".img", ".img.bmap", ".img.manifest.json"} {
					os.Remove(filepath.Join(out, n+side))
				}
			}
			cmd := start(nodes...)
			deadline := time.Now().Add(60 * time.Second)
			for !when.ready() && time.Now().Before(deadline) {
				time.Sleep(2 * time.Millisecond)
			}
			if !when.ready() {
				cmd.Process.Kill()
				t.Fatal("not reached within 60 s")
			}
			sent := time.Now()
			if err := cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			if took := time.Since(sent); took > time.Second {
				t.Errorf("stopped %v after Ctrl-C, want within a second", took)
			}
			if err == nil {
				t.Log("the builds finished before the interrupt landed")
			} else if !strings.Contains(stderr.String(), "interrupted: ") || !strings.Contains(stderr.String(), filepath.Join(out, "w6.img")) {
				t.Errorf("stderr does not name the images not written:\n%s", stderr.String())
			}
			if left := leftovers(out, filepath.Join(dir, ".cache")); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
			built := 0
			for _, n := range nodes {
				img := filepath.Join(out, n+".img")
				if _, err := os.Stat(img); os.IsNotExist(err) {
					for _, side := range []string{".bmap", ".manifest.json"} {
						if _, err := os.Stat(img + side); err == nil {
							t.Errorf("%s%s without its image", img, side)
						}
					}
					continue
				}
				built++
				if code, o, e := run(t, nil, "verify", img, img); code != 0 || !strings.Contains(o, "OK:") {
					t.Errorf("%s after Ctrl-C: verify: exit %d %s %s", n, code, o, e)
				}
			}
			t.Logf("%d of %d nodes were complete at the interrupt", built, len(nodes))
		})
	}
}
