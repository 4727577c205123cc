package ext4_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imgbake/imgbake/image/ext4"
)

// writer applies writes to an FS and to the model alike; any error fails
// the test.
type writer struct {
	t testing.TB
	f *ext4.FS
	m model
}

// newWriter opens img for writing, with the model of the fixture of kind.
func newWriter(t testing.TB, img, kind string) *writer {
	t.Helper()
	return &writer{t: t, f: openImage(t, img, false), m: newModel(fixtureTree(kind))}
}

func (w *writer) check(op string, err error) {
	w.t.Helper()
	if err != nil {
		w.t.Fatalf("%s: %v", op, err)
	}
}

func (w *writer) put(p string, data []byte, a ext4.Attr) {
	if n := w.m[p]; n != nil && n.Type == 'f' {
		n.Data, n.Perm, n.UID, n.GID = data, uint32(a.Mode), a.UID, a.GID
		if !replaceKeepsXattrs {
			n.Xattrs = map[string][]byte{}
		}
		return
	}
	w.m[p] = &mNode{Type: 'f', Perm: uint32(a.Mode), UID: a.UID, GID: a.GID, Data: data, Xattrs: map[string][]byte{}}
}

func (w *writer) writeFile(p string, data []byte, a ext4.Attr) {
	w.t.Helper()
	w.check("WriteFile "+p, w.f.WriteFile(p, data, a))
	w.put(p, data, a)
}

// createFile streams data into p through CreateFile, in odd-sized reads.
func (w *writer) createFile(p string, data []byte, a ext4.Attr) {
	w.t.Helper()
	w.check("CreateFile "+p, w.f.CreateFile(p, &oddReader{r: bytes.NewReader(data)}, int64(len(data)), a))
	w.put(p, data, a)
}

func (w *writer) mkdirAll(p string, a ext4.Attr) {
	w.t.Helper()
	w.check("MkdirAll "+p, w.f.MkdirAll(p, a))
	for d := p; d != "/"; d = path.Dir(d) {
		if w.m[d] == nil {
			w.m[d] = &mNode{Type: 'd', Perm: uint32(a.Mode), UID: a.UID, GID: a.GID, Xattrs: map[string][]byte{}}
		}
	}
}

func (w *writer) symlink(target, p string, a ext4.Attr) {
	w.t.Helper()
	w.check("Symlink "+p, w.f.Symlink(target, p, a))
	w.m[p] = &mNode{Type: 'l', Perm: 0o777, UID: a.UID, GID: a.GID, Target: target, Xattrs: map[string][]byte{}}
}

func (w *writer) remove(p string) {
	w.t.Helper()
	w.check("Remove "+p, w.f.Remove(p))
	delete(w.m, p)
}

func (w *writer) chmod(p string, mode uint16) {
	w.t.Helper()
	w.check("Chmod "+p, w.f.Chmod(p, mode))
	w.m[p].Perm = uint32(mode)
}

func (w *writer) chown(p string, uid, gid uint32) {
	w.t.Helper()
	w.check("Chown "+p, w.f.Chown(p, uid, gid))
	w.m[p].UID, w.m[p].GID = uid, gid
}

func (w *writer) setXattr(p, name string, v []byte) {
	w.t.Helper()
	w.check("SetXattr "+p+" "+name, w.f.SetXattr(p, name, v))
	w.m[p].Xattrs[name] = v
}

func (w *writer) close() {
	w.t.Helper()
	w.check("Close", w.f.Close())
}

// oddReader returns at most 3001 bytes per Read, so CreateFile cannot rely
// on block-sized reads.
type oddReader struct{ r io.Reader }

func (o *oddReader) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), 3001)]) }

// writeFeatures runs the write sequence every fixture kind must survive.
func writeFeatures(t testing.TB, w *writer) {
	t.Helper()
	bs := w.f.BlockSize()
	dir := ext4.Attr{Mode: 0o755}
	// New files and directories, owners, special bits, mtimes.
	w.mkdirAll("/etc/rancher/k3s", dir)
	w.writeFile("/etc/rancher/k3s/config.yaml", []byte("token-file: /etc/rancher/node/token\n"), ext4.Attr{Mode: 0o600})
	w.writeFile("/etc/hostname", []byte("node-1\n"), ext4.Attr{Mode: 0o644, Mtime: time.Unix(1700000000, 0)})
	w.mkdirAll("/usr/local/bin", dir)
	w.createFile("/usr/local/bin/k3s", fxBytes("k3s", 3<<20+77), ext4.Attr{Mode: 0o755})
	w.setXattr("/usr/local/bin/k3s", "security.capability", capNetRaw)
	w.writeFile("/usr/bin/newsuid", fxBytes("suid", 5000), ext4.Attr{Mode: 0o4755})
	w.writeFile("/usr/bin/newsgid", fxBytes("sgid", 100), ext4.Attr{Mode: 0o2711, GID: 5})
	w.mkdirAll("/var/tmp2", ext4.Attr{Mode: 0o1777})
	w.mkdirAll("/home/k3s/.kube", ext4.Attr{Mode: 0o700, UID: 1001, GID: 1001})
	w.writeFile("/home/k3s/.kube/config", []byte("apiVersion: v1\n"), ext4.Attr{Mode: 0o600, UID: 1001, GID: 1001})
	w.writeFile("/etc/empty", nil, ext4.Attr{Mode: 0o644})
	w.mkdirAll("/etc", ext4.Attr{Mode: 0o700, UID: 5}) // exists: left as it is
	// Replace (O_TRUNC): big by small, small by big, a file with xattrs.
	w.writeFile("/opt/big.bin", []byte("small now\n"), ext4.Attr{Mode: 0o640})
	w.createFile("/etc/passwd", fxBytes("passwd2", 2<<20+5), ext4.Attr{Mode: 0o644})
	w.writeFile("/home/pi/.bashrc", []byte("# replaced\n"), ext4.Attr{Mode: 0o644, UID: 1000, GID: 1000})
	// Symlinks around the 60-byte fast/slow limit.
	for _, n := range []int{1, 59, 60, 61, 300, bs - 1} {
		w.symlink(strings.Repeat("t", n-1)+"/", fmt.Sprintf("/usr/bin/link-%d", n), ext4.Attr{})
	}
	// Removals: files, symlinks, a hard link, big and sparse files, an empty dir.
	for _, p := range []string{"/etc/fstab", "/bin", "/usr/lib/libslow.so", "/usr/lib/firmware/blob.bin",
		"/var/sparse.img", "/usr/bin/python3", "/usr/bin/link-300"} {
		w.remove(p)
	}
	w.mkdirAll("/var/gone/deeper", dir)
	w.remove("/var/gone/deeper")
	w.remove("/var/gone")
	// chmod/chown keep security.capability and every other xattr.
	w.chmod("/usr/bin/ping", 0o750)
	w.chown("/usr/bin/ping", 0, 997)
	w.chmod("/etc/rancher", 0o711)
	w.chown("/home/pi/.bashrc", 1001, 1001)
	w.setXattr("/etc/hostname", "user.role", []byte("server"))
	w.setXattr("/etc/hostname", "user.role", []byte("agent")) // overwrite
	w.setXattr("/etc/rancher", "user.dir", []byte("on a directory"))
	w.setXattr("/etc/os-release", "user.big", fxBytes("big value", bs/3)) // needs the xattr block
	w.setXattr("/usr/bin/ping", "user.empty", nil)
	writeHtreeChanges(t, w)
	writeFragmented(t, w)
}

// writeHtreeChanges adds and removes entries in the htree directories.
func writeHtreeChanges(t testing.TB, w *writer) {
	t.Helper()
	for i := range 200 {
		w.writeFile(fmt.Sprintf("/usr/lib/x/added-entry-with-a-longer-name-%03d.so", i), fxBytes(fmt.Sprint(i), i*7), ext4.Attr{Mode: 0o644})
	}
	for i := 0; i < 3200; i += 32 {
		w.remove(fmt.Sprintf("/usr/lib/x/libthing-%04d.so.1", i))
	}
	for i := 0; i < 200; i += 4 {
		w.remove(fmt.Sprintf("/usr/lib/x/added-entry-with-a-longer-name-%03d.so", i))
	}
	for i := range 60 {
		w.symlink("../x", fmt.Sprintf("/usr/share/many/zz-added-%02d", i), ext4.Attr{})
		w.remove(fmt.Sprintf("/usr/share/many/locale-entry-%05d", i*83))
	}
}

// writeFragmented fills the filesystem with alternating one-block files,
// frees every other one and writes files that can only go into the holes,
// so their extent trees are two levels deep; one is removed, one replaced
// by a small file (freeing the tree), one kept.
func writeFragmented(t testing.TB, w *writer) {
	t.Helper()
	bs := int64(w.f.BlockSize())
	holes := int(4 * (bs - 12) / 12 * 5 / 4) // more extents than a depth-1 tree holds
	w.mkdirAll("/frag", ext4.Attr{Mode: 0o755})
	for i := range holes {
		w.writeFile(fmt.Sprintf("/frag/keep-%05d", i), fxBytes(fmt.Sprint("k", i), int(bs)), ext4.Attr{Mode: 0o644})
		w.writeFile(fmt.Sprintf("/frag/drop-%05d", i), fxBytes(fmt.Sprint("d", i), int(bs)), ext4.Attr{Mode: 0o644})
	}
	const margin = 64
	filler := w.f.FreeBytes() - margin*bs
	if filler < 0 {
		t.Fatalf("fixture too small for the fragmentation test: %d bytes free", w.f.FreeBytes())
	}
	w.createFile("/frag/filler", fxBytes("filler", int(filler)), ext4.Attr{Mode: 0o600})
	for i := range holes {
		w.remove(fmt.Sprintf("/frag/drop-%05d", i))
	}
	size := int(int64(holes+margin/2) * bs)
	w.createFile("/frag/deep", fxBytes("deep1", size), ext4.Attr{Mode: 0o644})
	w.remove("/frag/deep")
	w.createFile("/frag/deep", fxBytes("deep2", size), ext4.Attr{Mode: 0o644})
	w.writeFile("/frag/deep", []byte("short\n"), ext4.Attr{Mode: 0o644})
	w.createFile("/frag/deep-kept", fxBytes("deep3", size), ext4.Attr{Mode: 0o644})
	w.check("Sync", w.f.Sync())
	w.remove("/frag/filler")
}

// extentDepth returns the depth of path's extent tree, from debugfs ex.
func extentDepth(t testing.TB, img, p string) int {
	t.Helper()
	out := debugfsCmd(t, img, "ex "+dq(p))
	m := regexp.MustCompile(`(?m)^\s*\d+/\s*(\d+)\s`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("debugfs ex %s: %s", p, out)
	}
	d, _ := strconv.Atoi(m[1])
	return d
}

// debugfsTime returns the seconds of field ("mtime", "ctime") of path.
func debugfsTime(t testing.TB, img, p, field string) int64 {
	t.Helper()
	out := debugfsCmd(t, img, "stat "+dq(p))
	m := regexp.MustCompile(`(?m)^\s*` + field + `: 0x([0-9a-f]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("debugfs stat %s: no %s", p, field)
	}
	s, _ := strconv.ParseInt(m[1], 16, 64)
	return int64(int32(s))
}

func TestWriteFeatures(t *testing.T) {
	for _, kind := range fxKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			img := makeFixture(t, kind, 64)
			w := newWriter(t, img, kind)
			writeFeatures(t, w)
			w.close()
			verifyModel(t, img, w.m)
			for _, d := range fxHtreeDirs {
				if !htreeIndexed(t, img, d) {
					t.Errorf("%s is no longer htree-indexed", d)
				}
			}
			if d := extentDepth(t, img, "/frag/deep-kept"); d < 2 {
				t.Errorf("/frag/deep-kept: extent tree depth %d, the test meant to make it 2", d)
			}
			if got := debugfsTime(t, img, "/etc/hostname", "mtime"); got != 1700000000 {
				t.Errorf("/etc/hostname: mtime %d, want Attr.Mtime 1700000000", got)
			}
			for _, f := range []string{"mtime", "ctime"} {
				if got := debugfsTime(t, img, "/etc/rancher/k3s/config.yaml", f); got != testNow().Unix() {
					t.Errorf("config.yaml: %s %d, want Options.Now %d", f, got, testNow().Unix())
				}
			}
			verifyAPI(t, openImage(t, img, true), w.m)
		})
	}
}

// TestWriteRefused checks the errors of writes that must fail, and that
// they change nothing.
func TestWriteRefused(t *testing.T) {
	img := makeFixture(t, "pigen", 64)
	w := newWriter(t, img, "pigen")
	a := ext4.Attr{Mode: 0o644}
	for _, c := range []struct {
		op   string
		err  error
		want []error
	}{
		{"remove non-empty dir", w.f.Remove("/etc"), []error{ext4.ErrNotEmpty}},
		{"remove missing", w.f.Remove("/etc/missing"), []error{fs.ErrNotExist}},
		{"remove root", w.f.Remove("/"), []error{ext4.ErrNotEmpty, fs.ErrInvalid, fs.ErrPermission}},
		{"write under a file", w.f.WriteFile("/etc/hostname/x", nil, a), []error{ext4.ErrNotDir}},
		{"write under a missing dir", w.f.WriteFile("/nonexistent/x", nil, a), []error{fs.ErrNotExist}},
		{"write over a dir", w.f.WriteFile("/etc", nil, a), []error{ext4.ErrIsDir, fs.ErrExist}},
		{"create over a dir", w.f.CreateFile("/etc", strings.NewReader("x"), 1, a), []error{ext4.ErrIsDir, fs.ErrExist}},
		{"symlink over a file", w.f.Symlink("x", "/etc/hostname", a), []error{fs.ErrExist}},
		{"mkdir over a file", w.f.MkdirAll("/etc/hostname/sub", a), []error{ext4.ErrNotDir, fs.ErrExist}},
		{"chmod missing", w.f.Chmod("/etc/missing", 0o644), []error{fs.ErrNotExist}},
		{"setxattr missing", w.f.SetXattr("/etc/missing", "user.x", nil), []error{fs.ErrNotExist}},
		{"short reader", w.f.CreateFile("/etc/short", strings.NewReader("abc"), 10, a), []error{io.ErrUnexpectedEOF, io.EOF}},
		{"name too long", w.f.WriteFile("/etc/"+strings.Repeat("n", 256), nil, a), []error{fs.ErrInvalid}},
	} {
		if !errorsIsAny(c.err, c.want...) {
			t.Errorf("%s: got %v, want one of %v", c.op, c.err, c.want)
		}
	}
	w.close()
	verifyModel(t, img, w.m)
}

// TestOpenRefused checks the filesystems Open must refuse, and that the
// refusal tells the user what to do.
func TestOpenRefused(t *testing.T) {
	for _, c := range []struct {
		name    string
		cmds    []string
		ro      bool // read-only open refused too
		want    error
		message string
	}{
		{"needs_recovery", []string{"feature needs_recovery"}, false, ext4.ErrNeedsRecovery, "e2fsck -fy"},
		{"not cleanly unmounted", []string{"ssv state 0"}, false, nil, "e2fsck -fy"},
		{"unknown incompat", []string{"ssv feature_incompat %d"}, true, ext4.ErrUnsupported, ""},
		{"unknown ro_compat", []string{"ssv feature_ro_compat %d"}, false, ext4.ErrUnsupported, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := makeFixture(t, "pigen", 64)
			before := readSuper(t, img)
			cmds := c.cmds
			if strings.Contains(cmds[0], "incompat") {
				cmds = []string{fmt.Sprintf(cmds[0], binary.LittleEndian.Uint32(before[0x60:])|0x00800000)}
			} else if strings.Contains(cmds[0], "ro_compat") {
				cmds = []string{fmt.Sprintf(cmds[0], binary.LittleEndian.Uint32(before[0x64:])|0x00800000)}
			}
			debugfsWrite(t, img, cmds...)
			damaged, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			_, err = openFSErr(img, false)
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.message) {
				t.Errorf("read-write Open: got %v, want %v mentioning %q", err, c.want, c.message)
			}
			f, err := openFSErr(img, true)
			if c.ro {
				if !errors.Is(err, c.want) {
					t.Errorf("read-only Open: got %v, want %v", err, c.want)
				}
			} else if err != nil {
				t.Errorf("read-only Open: %v", err)
			} else if b, err := f.ReadFile("/etc/hostname"); err != nil || len(b) != 12 {
				t.Errorf("reading read-only: %v", err)
			}
			if after, _ := os.ReadFile(img); !bytes.Equal(after, damaged) {
				t.Errorf("a refused filesystem was modified")
			}
		})
	}
}

// readSuper returns the 1024-byte superblock of img.
func readSuper(t testing.TB, img string) []byte {
	t.Helper()
	fh, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	sb := make([]byte, 1024)
	if _, err := fh.ReadAt(sb, 1024); err != nil {
		t.Fatal(err)
	}
	return sb
}

// TestNoSpace fills a filesystem: the write that does not fit fails with
// ErrNoSpace and leaves nothing behind, everything before it stays intact.
func TestNoSpace(t *testing.T) {
	for _, kind := range []string{"pigen", "1k"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			img := makeFixture(t, kind, 64)
			w := newWriter(t, img, kind)
			w.mkdirAll("/fill", ext4.Attr{Mode: 0o755})
			var err error
			for i := 0; err == nil; i++ {
				p := fmt.Sprintf("/fill/f%03d", i)
				data := fxBytes(p, 3<<20+i)
				free := w.f.FreeBytes()
				if err = w.f.CreateFile(p, bytes.NewReader(data), int64(len(data)), ext4.Attr{Mode: 0o644}); err == nil {
					w.put(p, data, ext4.Attr{Mode: 0o644})
					continue
				}
				if !errors.Is(err, ext4.ErrNoSpace) {
					t.Fatalf("writing %s: %v, want ErrNoSpace", p, err)
				}
				if free > int64(len(data))+1<<20 {
					t.Errorf("ErrNoSpace writing %d bytes with %d free", len(data), free)
				}
				if after := w.f.FreeBytes(); after != free {
					t.Errorf("failed write changed free space from %d to %d", free, after)
				}
				if _, err := w.f.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("failed write left %s behind: %v", p, err)
				}
			}
			// Replacing a file by a bigger one that does not fit keeps the old one.
			free := w.f.FreeBytes()
			big := fxBytes("too big", int(free)+(4<<20))
			if err := w.f.WriteFile("/fill/f000", big, ext4.Attr{Mode: 0o600}); !errors.Is(err, ext4.ErrNoSpace) {
				t.Errorf("replacing with a file larger than the free space: %v", err)
			}
			// Small things still fit in what is left, then the room runs out.
			w.writeFile("/fill/small", []byte("still fits\n"), ext4.Attr{Mode: 0o644})
			for i := 0; ; i++ {
				p := fmt.Sprintf("/fill/s%04d", i)
				err := w.f.WriteFile(p, fxBytes(p, 5000), ext4.Attr{Mode: 0o644})
				if errors.Is(err, ext4.ErrNoSpace) {
					break
				}
				w.check("WriteFile "+p, err)
				w.put(p, fxBytes(p, 5000), ext4.Attr{Mode: 0o644})
			}
			for _, err := range []error{w.f.MkdirAll("/fill/d/e", ext4.Attr{Mode: 0o755}),
				w.f.Symlink(strings.Repeat("x", 200), "/fill/slowlink", ext4.Attr{}),
				w.f.SetXattr("/etc/hostname", "user.big", fxBytes("x", w.f.BlockSize()/2))} {
				if err != nil && !errors.Is(err, ext4.ErrNoSpace) {
					t.Errorf("on a full filesystem: %v, want success or ErrNoSpace", err)
				}
				if err == nil {
					t.Logf("fit on the full filesystem (there was room left in a block)")
				}
			}
			// Re-read state: only what succeeded is in the model, so
			// compare after reopening the image.
			w.close()
			m := w.m
			f := openImage(t, img, true)
			for _, p := range []string{"/fill/d", "/fill/slowlink"} {
				if fi, err := f.Lstat(p); err == nil {
					m[p] = &mNode{Type: map[bool]byte{true: 'd', false: 'l'}[fi.IsDir()], Perm: fi.Mode & 0o7777, Xattrs: map[string][]byte{}}
					if !fi.IsDir() {
						m[p].Target = strings.Repeat("x", 200)
					}
				}
			}
			if fi, err := f.Lstat("/fill/d/e"); err == nil {
				m["/fill/d/e"] = &mNode{Type: 'd', Perm: fi.Mode & 0o7777, Xattrs: map[string][]byte{}}
			}
			if v, err := f.Getxattr("/etc/hostname", "user.big"); err == nil {
				m["/etc/hostname"].Xattrs["user.big"] = v
			}
			verifyModel(t, img, m)
		})
	}
}

// TestNoInodes runs a filesystem out of inodes.
func TestNoInodes(t *testing.T) {
	img := makeFixtureBytes(t, "tiny", 1<<20)
	w := newWriter(t, img, "tiny")
	n := 0
	for ; ; n++ {
		p := fmt.Sprintf("/dir/new-%03d", n)
		err := w.f.WriteFile(p, nil, ext4.Attr{Mode: 0o644})
		if errors.Is(err, ext4.ErrNoInodes) {
			break
		}
		w.check("WriteFile "+p, err)
		w.put(p, nil, ext4.Attr{Mode: 0o644})
		if n > 1000 {
			t.Fatal("no ErrNoInodes after 1000 files on a 128-inode filesystem")
		}
	}
	for name, err := range map[string]error{
		"MkdirAll":   w.f.MkdirAll("/dir/sub", ext4.Attr{Mode: 0o755}),
		"Symlink":    w.f.Symlink("x", "/dir/link", ext4.Attr{}),
		"CreateFile": w.f.CreateFile("/dir/c", strings.NewReader("abc"), 3, ext4.Attr{Mode: 0o644}),
	} {
		if !errors.Is(err, ext4.ErrNoInodes) {
			t.Errorf("%s with no free inodes: %v, want ErrNoInodes", name, err)
		}
	}
	w.remove("/dir/new-000")
	w.writeFile("/dir/again", []byte("one inode was freed\n"), ext4.Attr{Mode: 0o644})
	w.close()
	verifyModel(t, img, w.m)
	t.Logf("%d files fit", n)
}

// TestOffset edits a filesystem that starts 1 MiB into its device, as a
// partition does, and checks the bytes around it stay as they were.
func TestOffset(t *testing.T) {
	img := makeFixture(t, "pigen", 64)
	fsBytes, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	head, tail := fxBytes("head", 1<<20), fxBytes("tail", 1<<20)
	dev := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(dev, slices.Concat(head, fsBytes, tail), 0o644); err != nil {
		t.Fatal(err)
	}
	fh, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	f, err := ext4.Open(fh, 1<<20, int64(len(fsBytes)), &ext4.Options{Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	w := &writer{t: t, f: f, m: newModel(fixtureTree("pigen"))}
	w.mkdirAll("/etc/rancher/k3s", ext4.Attr{Mode: 0o755})
	w.createFile("/etc/rancher/k3s/k3s.tar", fxBytes("tar", 9<<20), ext4.Attr{Mode: 0o644})
	w.remove("/opt/big.bin")
	w.close()
	all, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2<<20+len(fsBytes) || !bytes.Equal(all[:1<<20], head) || !bytes.Equal(all[len(all)-1<<20:], tail) {
		t.Fatalf("bytes outside the filesystem changed (device now %d bytes)", len(all))
	}
	if err := os.WriteFile(img, all[1<<20:len(all)-1<<20], 0o644); err != nil {
		t.Fatal(err)
	}
	verifyModel(t, img, w.m)
}

// TestReadOnlyUnchanged checks a read-only FS on a plain io.ReaderAt
// never writes, even on Close.
func TestReadOnlyUnchanged(t *testing.T) {
	img := makeFixture(t, "default", 64)
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ext4.Open(bytes.NewReader(before), 0, int64(len(before)), &ext4.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := f.ReadFile("/opt/big.bin"); err != nil || len(b) != 5<<20 {
		t.Errorf("ReadFile: %d bytes, %v", len(b), err)
	}
	if err := f.Sync(); err != nil {
		t.Errorf("Sync read-only: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close read-only: %v", err)
	}
	if after, _ := os.ReadFile(img); !bytes.Equal(before, after) {
		t.Errorf("image changed")
	}
}

// TestReproducible makes the same edits on two copies of a fixture: the
// results must be byte-identical (Options.Now is the only clock).
func TestReproducible(t *testing.T) {
	var sums [2][sha256.Size]byte
	for i := range sums {
		img := makeFixture(t, "pigen", 64)
		w := newWriter(t, img, "pigen")
		w.mkdirAll("/etc/rancher/k3s", ext4.Attr{Mode: 0o755})
		w.writeFile("/etc/rancher/k3s/config.yaml", []byte("a: b\n"), ext4.Attr{Mode: 0o600})
		w.createFile("/usr/bin/k3s", fxBytes("k3s", 2<<20), ext4.Attr{Mode: 0o755})
		w.setXattr("/usr/bin/k3s", "user.x", []byte("y"))
		w.remove("/etc/fstab")
		writeHtreeChanges(t, w)
		w.close()
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		sums[i] = sha256.Sum256(b)
	}
	if sums[0] != sums[1] {
		t.Errorf("the same edits gave different images: %x vs %x", sums[0], sums[1])
	}
}

// TestOtherFeatures edits filesystems with features real Pi images rarely
// have: each must either be edited correctly (e2fsck clean, read back by
// debugfs) or be refused with ErrUnsupported; never silently damaged.
func TestOtherFeatures(t *testing.T) {
	for _, opts := range []string{
		"-t ext2", "-t ext3", "-O ^extent,^64bit", "-O ^has_journal", "-O ^dir_index", "-O ^flex_bg",
		"-O ^sparse_super,^resize_inode", "-O sparse_super2", "-O ^resize_inode,meta_bg", "-O inline_data",
		"-O quota", "-O project,quota", "-O ea_inode", "-O large_dir", "-O encrypt", "-O casefold",
		"-O ^filetype", "-O bigalloc -C 4096", "-I 128", "-O ^metadata_csum,uninit_bg", "-O ^64bit -b 4096",
	} {
		t.Run(opts, func(t *testing.T) {
			t.Parallel()
			kind := "small:" + opts
			img := makeFixture(t, kind, 8)
			f, err := openFSErr(img, false)
			if errors.Is(err, ext4.ErrUnsupported) {
				t.Logf("refused: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			w := &writer{t: t, f: f, m: newModel(fixtureTree(kind))}
			a := ext4.Attr{Mode: 0o644}
			ops := []struct {
				do     func() error
				update func()
			}{
				{func() error { return f.MkdirAll("/etc/rancher/k3s", ext4.Attr{Mode: 0o755}) }, func() {
					for _, d := range []string{"/etc/rancher", "/etc/rancher/k3s"} {
						w.m[d] = &mNode{Type: 'd', Perm: 0o755, Xattrs: map[string][]byte{}}
					}
				}},
				{func() error { return f.WriteFile("/etc/rancher/k3s/c.yaml", []byte("x: y\n"), a) },
					func() { w.put("/etc/rancher/k3s/c.yaml", []byte("x: y\n"), a) }},
				{func() error { return f.WriteFile("/etc/hostname", fxBytes("h", 70000), a) },
					func() { w.put("/etc/hostname", fxBytes("h", 70000), a) }},
				{func() error { return f.Symlink(strings.Repeat("s", 100), "/etc/slow", ext4.Attr{}) }, func() {
					w.m["/etc/slow"] = &mNode{Type: 'l', Perm: 0o777, Target: strings.Repeat("s", 100), Xattrs: map[string][]byte{}}
				}},
				{func() error { return f.SetXattr("/etc/passwd", "user.x", []byte("y")) },
					func() { w.m["/etc/passwd"].Xattrs["user.x"] = []byte("y") }},
				{func() error { return f.Remove("/usr/bin/big") }, func() { delete(w.m, "/usr/bin/big") }},
				{func() error { return f.Remove("/dir/entry-007") }, func() { delete(w.m, "/dir/entry-007") }},
			}
			for i, op := range ops {
				if err := noPanic(op.do); err != nil {
					if !errors.Is(err, ext4.ErrUnsupported) {
						t.Errorf("op %d: %v, want success or ErrUnsupported", i, err)
					}
					t.Logf("op %d refused: %v", i, err)
					break
				}
				op.update()
			}
			w.close()
			verifyModel(t, img, w.m)
		})
	}
}

// noPanic runs do, turning a panic into an error with its stack, so one
// bug does not end the whole test binary.
func noPanic(do func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return do()
}
