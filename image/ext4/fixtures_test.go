package ext4_test

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
)

// Fixtures are real ext4 filesystems made by mkfs.ext4 -d from a staged
// directory that looks like a Raspberry Pi OS / Armbian root filesystem.
// Each (kind, size) is built once per test binary run into a cache directory
// and every makeFixture call returns a fresh, writable copy.

// fxKinds lists the fixture kinds, each with the mkfs.ext4 options of the
// distribution it stands for (see /work/shared/REFERENCE.md).
var fxKinds = []string{"pigen", "raspbian-old", "armbian", "armbian-old", "default", "1k"}

// fxMkfsArgs returns the mkfs.ext4 options for kind.
func fxMkfsArgs(kind string) ([]string, error) {
	// Real root filesystems are far larger than 512 MiB, where mke2fs picks
	// 4 KiB blocks; small test images would get 1 KiB blocks, so say it.
	b4k := []string{"-b", "4096", "-i", "4096"}
	switch kind {
	case "pigen": // Raspberry Pi OS Bookworm/Trixie (pi-gen export-image)
		return append(b4k, "-L", "rootfs", "-O", "^64bit,^huge_file"), nil
	case "raspbian-old": // Buster / early Bullseye
		return append(b4k, "-L", "rootfs", "-O", "^metadata_csum,^64bit"), nil
	case "armbian":
		return append(b4k, "-L", "armbi_root", "-m", "2", "-O", "^orphan_file"), nil
	case "armbian-old":
		return append(b4k, "-L", "armbi_root", "-O", "^64bit,^metadata_csum"), nil
	case "default": // upstream e2fsprogs 1.47 defaults (Debian's mke2fs.conf lacks orphan_file)
		return append(b4k, "-O", "64bit,orphan_file"), nil
	case "1k":
		return []string{"-b", "1024", "-i", "4096", "-O", "64bit"}, nil
	case "tiny": // fuzzing seed: 1 KiB blocks, no journal, few inodes
		return []string{"-b", "1024", "-I", "256", "-N", "128", "-m", "0", "-O", "^has_journal,^resize_inode"}, nil
	}
	// "small:<mkfs options>": the tiny tree on a filesystem with other features.
	if opts, ok := strings.CutPrefix(kind, "small:"); ok {
		return append([]string{"-b", "1024", "-I", "256", "-N", "256"}, strings.Fields(opts)...), nil
	}
	return nil, fmt.Errorf("unknown fixture kind %q", kind)
}

// fxEntry is one thing in a fixture tree.
type fxEntry struct {
	Path     string
	Type     byte   // 'f' regular, 'd' directory, 'l' symlink, 'h' hard link to Target
	Perm     uint32 // 07777 bits
	UID, GID uint32
	Size     int64  // regular files
	Sparse   bool   // data only in three 4 KiB islands, holes elsewhere
	Target   string // symlink target, or the path a hard link points at
	Xattrs   map[string][]byte
}

// capNetRaw is a VFS_CAP_REVISION_2 security.capability value granting
// cap_net_raw+ep, as /usr/bin/ping carries on Raspberry Pi OS.
var capNetRaw = []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// fxContent returns the deterministic content of a regular file of the tree.
func (e *fxEntry) content() []byte {
	if e.Sparse {
		b := make([]byte, e.Size)
		for _, off := range []int64{0, e.Size / 2 &^ 4095, e.Size - 4096} {
			copy(b[off:off+4096], fxBytes(fmt.Sprint(e.Path, off), 4096))
		}
		return b
	}
	return fxBytes(e.Path, int(e.Size))
}

// fxBytes returns n pseudo-random bytes determined by seed.
func fxBytes(seed string, n int) []byte {
	h := fnv.New64a()
	io.WriteString(h, seed)
	r := rand.New(rand.NewPCG(h.Sum64(), uint64(n)))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// fixtureTree returns what a fixture of kind holds, parents before children.
func fixtureTree(kind string) []fxEntry {
	d := func(p string, perm, uid, gid uint32) fxEntry {
		return fxEntry{Path: p, Type: 'd', Perm: perm, UID: uid, GID: gid}
	}
	f := func(p string, size int64) fxEntry { return fxEntry{Path: p, Type: 'f', Perm: 0o644, Size: size} }
	l := func(p, target string) fxEntry { return fxEntry{Path: p, Type: 'l', Perm: 0o777, Target: target} }
	slowTarget := "../lib/aarch64-linux-gnu/" + strings.Repeat("very-long-library-directory-name/", 3) + "libslow.so.1"
	ping := f("/usr/bin/ping", 70000)
	ping.Perm = 0o755
	ping.Xattrs = map[string][]byte{"security.capability": capNetRaw}
	if kind == "tiny" || strings.HasPrefix(kind, "small:") {
		ping.Size = 9000 // tiny is a fuzzing seed: the less data, the more mutations hit metadata
		t := []fxEntry{
			d("/etc", 0o755, 0, 0), f("/etc/hostname", 12), f("/etc/passwd", 900),
			d("/usr", 0o755, 0, 0), d("/usr/bin", 0o755, 0, 0), l("/bin", "usr/bin"), ping,
			l("/usr/bin/slow", slowTarget), f("/usr/bin/big", 20000),
			{Path: "/usr/bin/sparse", Type: 'f', Perm: 0o644, Size: 40960, Sparse: true},
			{Path: "/etc/shadow", Type: 'f', Perm: 0o640, GID: 42, Size: 500,
				Xattrs: map[string][]byte{"user.big": fxBytes("xa", 600), "user.small": []byte("v")}},
			d("/tmp", 0o1777, 0, 0), d("/dir", 0o755, 1000, 1000),
		}
		for i := range 90 {
			t = append(t, f(fmt.Sprintf("/dir/entry-%03d", i), int64(i%3)))
		}
		return t
	}
	t := []fxEntry{
		d("/etc", 0o755, 0, 0), f("/etc/hostname", 12), f("/etc/passwd", 1500), f("/etc/fstab", 300),
		f("/etc/os-release", 400),
		{Path: "/etc/shadow", Type: 'f', Perm: 0o640, GID: 42, Size: 900},
		d("/etc/ssh", 0o755, 0, 0), f("/etc/ssh/sshd_config", 3300),
		d("/etc/systemd", 0o755, 0, 0), d("/etc/systemd/system", 0o755, 0, 0),
		d("/etc/systemd/system/multi-user.target.wants", 0o755, 0, 0),
		l("/etc/systemd/system/multi-user.target.wants/ssh.service", "/lib/systemd/system/ssh.service"),
		d("/usr", 0o755, 0, 0), d("/usr/bin", 0o755, 0, 0), l("/bin", "usr/bin"), ping,
		{Path: "/usr/bin/sudo", Type: 'f', Perm: 0o4755, Size: 180000},
		{Path: "/usr/bin/wall", Type: 'f', Perm: 0o2755, GID: 5, Size: 30000},
		{Path: "/usr/bin/python3.11", Type: 'f', Perm: 0o755, Size: 6000},
		{Path: "/usr/bin/python3", Type: 'h', Perm: 0o755, Target: "/usr/bin/python3.11"},
		d("/usr/lib", 0o755, 0, 0), d("/usr/lib/x", 0o755, 0, 0),
		l("/usr/lib/libc.so.6", "libc-2.36.so"), l("/usr/lib/libslow.so", slowTarget),
		l("/etc/loop1", "loop2"), l("/etc/loop2", "/etc/loop1"),
		d("/usr/lib/firmware", 0o755, 0, 0), f("/usr/lib/firmware/blob.bin", 3<<20+1234),
		d("/opt", 0o755, 0, 0), f("/opt/big.bin", 5<<20),
		d("/var", 0o755, 0, 0), d("/var/lib", 0o755, 0, 0),
		d("/var/lib/other", 0o750, 105, 109), f("/var/lib/other/state", 2000),
		{Path: "/var/sparse.img", Type: 'f', Perm: 0o600, Size: 8 << 20, Sparse: true},
		d("/tmp", 0o1777, 0, 0),
		d("/home", 0o755, 0, 0), d("/home/pi", 0o750, 1000, 1000),
		{Path: "/home/pi/.bashrc", Type: 'f', Perm: 0o644, UID: 1000, GID: 1000, Size: 3500,
			Xattrs: map[string][]byte{"user.comment": []byte("from skel"), "user.big": fxBytes("big xattr", 700)}},
		d("/usr/share", 0o755, 0, 0), d("/usr/share/many", 0o755, 0, 0),
		d("/usr/share/deep", 0o755, 0, 0),
	}
	deep := "/usr/share/deep"
	for _, c := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		deep += "/" + c
		t = append(t, d(deep, 0o755, 0, 0), f(deep+"/file-"+c, int64(len(deep)*37)))
	}
	for i := range 300 {
		e := f(fmt.Sprintf("/usr/bin/tool-%03d", i), int64(i*17%5000))
		e.Perm = 0o755
		t = append(t, e)
	}
	for i := range 3200 {
		size := int64(0)
		if i%100 == 0 {
			size = 1000 + int64(i)
		}
		t = append(t, f(fmt.Sprintf("/usr/lib/x/libthing-%04d.so.1", i), size))
	}
	for i := range 5000 {
		t = append(t, f(fmt.Sprintf("/usr/share/many/locale-entry-%05d", i), 0))
	}
	return t
}

// fxFind returns the entry for path in tree.
func fxFind(tree []fxEntry, path string) *fxEntry {
	for i := range tree {
		if tree[i].Path == path {
			return &tree[i]
		}
	}
	return nil
}

// fxLinks returns the link count regular file path has in tree.
func fxLinks(tree []fxEntry, path string) uint32 {
	n := uint32(1)
	for _, e := range tree {
		if e.Type == 'h' && e.Target == path {
			n++
		}
	}
	return n
}

// fxHtreeDirs are the directories of the full tree that must be htree-indexed.
var fxHtreeDirs = []string{"/usr/lib/x", "/usr/share/many"}

// fxCacheDir is where this test binary's fixtures are cached; TestMain
// removes it.
func fxCacheDir() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("imgbake-ext4-fixtures-%d", os.Getpid()))
}

func TestMain(m *testing.M) {
	removeStaleCaches()
	code := m.Run()
	os.RemoveAll(fxCacheDir())
	os.Exit(code)
}

// removeStaleCaches removes the fixture caches of test processes that died
// without cleaning up (killed runs, fuzz workers).
func removeStaleCaches() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "imgbake-ext4-fixtures-*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "imgbake-ext4-fixtures-"))
		if err == nil && syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}

// makeFixture returns the path of a fresh copy of a fixture filesystem of
// kind, sizeMB MiB large, in a directory removed when t ends.
func makeFixture(t testing.TB, kind string, sizeMB int) string {
	t.Helper()
	return makeFixtureBytes(t, kind, int64(sizeMB)<<20)
}

// makeFixtureBytes is makeFixture with the size in bytes.
func makeFixtureBytes(t testing.TB, kind string, size int64) string {
	t.Helper()
	requireTool(t, "mkfs.ext4")
	requireTool(t, "e2fsck")
	requireTool(t, "debugfs")
	cached, err := fxCached(kind, size)
	if err != nil {
		t.Fatalf("building %s fixture of %d bytes: %v", kind, size, err)
	}
	dst := filepath.Join(t.TempDir(), "fs.img")
	if err := copySparse(cached, dst); err != nil {
		t.Fatalf("copying fixture: %v", err)
	}
	return dst
}

// fxCached returns the cached image for (kind, size), building it under a
// lock file so parallel tests build it once.
func fxCached(kind string, size int64) (string, error) {
	dir := fxCacheDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	name := strings.Map(func(r rune) rune {
		if strings.ContainsRune("abcdefghijklmnopqrstuvwxyz0123456789-_^", r) {
			return r
		}
		return '_'
	}, kind)
	h := fnv.New32a()
	io.WriteString(h, kind)
	img := filepath.Join(dir, fmt.Sprintf("%s-%08x-%d.img", name, h.Sum32(), size))
	return fixture.BuildOnce(img, img+".lock", func(tmp string) error { return fxBuild(kind, size, tmp) })
}

// fxBuild stages the tree of kind, runs mkfs.ext4 -d on it, fixes what the
// staging could not carry, indexes directories with e2fsck -fyD and checks
// the result.
func fxBuild(kind string, size int64, img string) error {
	args, err := fxMkfsArgs(kind)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(shmDir(), "imgbake-ext4-stage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	stage, xdir := filepath.Join(work, "root"), filepath.Join(work, "xattrs")
	if err := os.Mkdir(stage, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(xdir, 0o755); err != nil {
		return err
	}
	tree := fixtureTree(kind)
	asRoot := os.Geteuid() == 0
	var fix []string // debugfs commands applied after mkfs
	for i := range tree {
		cmds, err := fxStage(stage, xdir, &tree[i], asRoot)
		if err != nil {
			return fmt.Errorf("staging %s: %w", tree[i].Path, err)
		}
		fix = append(fix, cmds...)
	}
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		return err
	}
	if err := os.Truncate(img, size); err != nil {
		return err
	}
	fstype := "ext4"
	if i := slices.Index(args, "-t"); i >= 0 {
		fstype = args[i+1]
		args = slices.Delete(args, i, i+2)
	}
	args = append([]string{"-F", "-q", "-t", fstype, "-U", "9c3a8a4e-5b7d-4c39-9d1e-0f2a6b1c7e55",
		"-E", "hash_seed=2f4c1b7a-3e5d-4a69-8b0c-1d2e3f405162", "-d", stage}, args...)
	if out, err := exec.Command("mkfs.ext4", append(args, img)...).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if len(fix) > 0 {
		if err := debugfsScript(img, fix); err != nil {
			return err
		}
	}
	// mkfs -d writes linear directories; e2fsck -D indexes them like a
	// long-lived root filesystem has them. Exit 1 means "fixed", fine here.
	out, err := exec.Command("e2fsck", "-fyD", img).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() > 1) {
		return fmt.Errorf("e2fsck -fyD: %v\n%s", err, out)
	}
	if out, err := e2fsckRun(img); err != nil {
		return fmt.Errorf("fresh fixture is not clean: %v\n%s", err, out)
	}
	if kind != "tiny" && !strings.HasPrefix(kind, "small:") {
		for _, dir := range fxHtreeDirs {
			stdout, stderr, err := debugfsRun(img, "htree_dump "+dir)
			if err != nil || !strings.Contains(stdout, "Root node dump") {
				return fmt.Errorf("%s is not htree-indexed after e2fsck -fyD: %v %s", dir, err, stderr)
			}
		}
	}
	return nil
}

// fxStage creates e under stage. Ownership and xattrs that the staging
// directory cannot hold (not root) come back as debugfs commands.
func fxStage(stage, xdir string, e *fxEntry, asRoot bool) ([]string, error) {
	p := filepath.Join(stage, e.Path)
	var err error
	switch e.Type {
	case 'd':
		err = os.Mkdir(p, 0o700)
	case 'l':
		err = os.Symlink(e.Target, p)
	case 'h':
		return nil, os.Link(filepath.Join(stage, e.Target), p)
	case 'f':
		err = fxWriteStaged(p, e)
	}
	if err != nil {
		return nil, err
	}
	var fix []string
	if asRoot {
		if err := os.Lchown(p, int(e.UID), int(e.GID)); err != nil {
			return nil, err
		}
	} else {
		fix = append(fix, "sif "+dq(e.Path)+" uid "+fmt.Sprint(e.UID), "sif "+dq(e.Path)+" gid "+fmt.Sprint(e.GID))
	}
	if e.Type != 'l' {
		// After chown, which clears setuid/setgid.
		if err := syscall.Chmod(p, e.Perm); err != nil {
			return nil, err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(e.Xattrs)) {
		if asRoot {
			err := setxattr(p, name, e.Xattrs[name])
			if err == nil {
				continue
			}
			if !errors.Is(err, errors.ErrUnsupported) {
				return nil, fmt.Errorf("setting xattr %s: %w", name, err)
			}
		}
		vf := filepath.Join(xdir, strings.ReplaceAll(e.Path, "/", "_")+"."+name)
		if err := os.WriteFile(vf, e.Xattrs[name], 0o644); err != nil {
			return nil, err
		}
		fix = append(fix, "ea_set -f "+dq(vf)+" "+dq(e.Path)+" "+name)
	}
	return fix, nil
}

// fxWriteStaged writes the content of regular file e to p, leaving holes
// where a sparse file has zeros.
func fxWriteStaged(p string, e *fxEntry) error {
	fh, err := os.Create(p)
	if err != nil {
		return err
	}
	b := e.content()
	if e.Sparse {
		for off := int64(0); off < e.Size; off += 4096 {
			chunk := b[off:min(off+4096, e.Size)]
			if !allZero(chunk) {
				if _, err := fh.WriteAt(chunk, off); err != nil {
					fh.Close()
					return err
				}
			}
		}
		err = fh.Truncate(e.Size)
	} else {
		_, err = fh.Write(b)
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	return err
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// copySparse copies src to dst, visiting only the data regions of src
// (SEEK_DATA/SEEK_HOLE) and leaving all-zero 64 KiB chunks as holes, so a
// mostly empty 64 GiB image copies in milliseconds.
func copySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	const seekData, seekHole = 3, 4
	buf := make([]byte, 64<<10)
	for off := int64(0); off < fi.Size(); {
		start, err := in.Seek(off, seekData)
		if err != nil {
			break // ENXIO: no data after off
		}
		end, err := in.Seek(start, seekHole)
		if err != nil {
			end = fi.Size()
		}
		for pos := start; pos < end; {
			n, rerr := in.ReadAt(buf[:min(int64(len(buf)), end-pos)], pos)
			if n > 0 && !allZero(buf[:n]) {
				if _, err := out.WriteAt(buf[:n], pos); err != nil {
					out.Close()
					return err
				}
			}
			pos += int64(n)
			if rerr != nil && rerr != io.EOF {
				out.Close()
				return rerr
			}
			if n == 0 {
				break
			}
		}
		off = end
	}
	if err := out.Truncate(fi.Size()); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestFixtures checks the fixtures themselves, so a failure elsewhere is not
// a broken fixture: e2fsck clean, the features each kind stands for, htree
// directories, owners, modes, xattrs, symlinks and file bytes as staged.
func TestFixtures(t *testing.T) {
	wantFeat := map[string][]string{
		"pigen":        {"metadata_csum", "!64bit", "!huge_file"},
		"raspbian-old": {"!metadata_csum", "!64bit"},
		"armbian":      {"metadata_csum", "!orphan_file"},
		"armbian-old":  {"!64bit", "!metadata_csum"},
		"default":      {"64bit", "orphan_file", "metadata_csum"},
		"1k":           {"64bit"},
	}
	for _, kind := range fxKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			img := makeFixture(t, kind, 64)
			e2fsckClean(t, img)
			feats := debugfsFeatures(t, img)
			for _, w := range wantFeat[kind] {
				if feats[strings.TrimPrefix(w, "!")] == strings.HasPrefix(w, "!") {
					t.Errorf("feature %s: fixture has %q", w, slices.Sorted(maps.Keys(feats)))
				}
			}
			tree := fixtureTree(kind)
			for _, p := range []string{"/usr/bin/ping", "/usr/bin/sudo", "/usr/bin/wall", "/etc/shadow",
				"/home/pi", "/home/pi/.bashrc", "/var/lib/other", "/tmp", "/usr/lib/libslow.so", "/bin",
				"/var/sparse.img", "/opt/big.bin", "/usr/bin/python3"} {
				checkAgainstDebugfs(t, img, fxFind(tree, p), tree)
			}
			verifyModel(t, img, newModel(tree))
		})
	}
}

// recTB records the failures of a check instead of failing the test.
type recTB struct {
	testing.TB
	errs []string
}

func (r *recTB) Helper() {}
func (r *recTB) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recTB) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

// TestVerifierCatches makes sure verifyModel, which every write test relies
// on, reports wrong bytes, modes, owners, xattrs, targets and names.
func TestVerifierCatches(t *testing.T) {
	img := makeFixture(t, "1k", 64)
	m := newModel(fixtureTree("1k"))
	m["/etc/hostname"].Data = []byte("other\n")
	m["/usr/bin/sudo"].Perm = 0o755
	m["/var/lib/other"].UID = 0
	delete(m["/usr/bin/ping"].Xattrs, "security.capability")
	m["/home/pi/.bashrc"].Xattrs["user.comment"] = []byte("changed")
	m["/bin"].Target = "usr/sbin"
	m["/etc/phantom"] = &mNode{Type: 'f', Perm: 0o644}
	delete(m, "/etc/fstab")
	rec := &recTB{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); verifyModel(rec, img, m) }()
	<-done
	all := strings.Join(rec.errs, "\n")
	for _, want := range []string{"/etc/hostname", "/usr/bin/sudo", "/var/lib/other", "/usr/bin/ping",
		"/home/pi/.bashrc", "/bin", "/etc/phantom", "/etc/fstab"} {
		if !strings.Contains(all, want+":") && !strings.Contains(all, dq(want)) {
			t.Errorf("verifyModel did not report %s; it said:\n%s", want, all)
		}
	}
}

// checkAgainstDebugfs compares e with what debugfs reads from img.
func checkAgainstDebugfs(t *testing.T, img string, e *fxEntry, tree []fxEntry) {
	t.Helper()
	st := debugfsStat(t, img, e.Path)
	want := *e
	if e.Type == 'h' {
		want = *fxFind(tree, e.Target)
	}
	nlink := fxLinks(tree, want.Path)
	if st.Type() != want.Type || st.Mode&0o7777 != want.Perm || st.UID != want.UID || st.GID != want.GID {
		t.Errorf("%s: debugfs says type %c mode %o uid %d gid %d, staged %c %o %d %d",
			e.Path, st.Type(), st.Mode&0o7777, st.UID, st.GID, want.Type, want.Perm, want.UID, want.GID)
	}
	switch want.Type {
	case 'f':
		if st.Links != nlink {
			t.Errorf("%s: %d links, want %d", e.Path, st.Links, nlink)
		}
		if got := debugfsCat(t, img, e.Path); !bytes.Equal(got, want.content()) {
			t.Errorf("%s: content differs from staged (%d bytes vs %d)", e.Path, len(got), want.Size)
		}
	case 'l':
		if got := debugfsReadlink(t, img, e.Path); got != want.Target {
			t.Errorf("%s: symlink to %q, want %q", e.Path, got, want.Target)
		}
	}
	got := eaList(t, img, e.Path)
	if len(got) != len(want.Xattrs) {
		t.Errorf("%s: xattrs %q, want %q", e.Path, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want.Xattrs)))
	}
	for k, v := range want.Xattrs {
		if !bytes.Equal(got[k], v) {
			t.Errorf("%s: xattr %s = %x, want %x", e.Path, k, got[k], v)
		}
	}
}

// dq quotes s for the debugfs command line.
func dq(s string) string { return `"` + s + `"` }
