package ext4_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// Helpers that run the real e2fsprogs tools against an image file.

// requireTool skips t when name is not installed.
func requireTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s is not installed (apt-get install e2fsprogs): these tests verify with the real tool", name)
	}
}

// e2fsckRun runs e2fsck -fn on img and returns its output; err is non-nil
// unless it exited 0 (nothing to fix).
func e2fsckRun(img string) (string, error) {
	out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput()
	return string(out), err
}

// e2fsckClean fails t with e2fsck's full output unless e2fsck -fn finds
// nothing wrong with img.
func e2fsckClean(t testing.TB, img string) {
	t.Helper()
	requireTool(t, "e2fsck")
	if out, err := e2fsckRun(img); err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
}

// debugfsRun runs one read-only debugfs request on img.
func debugfsRun(img, cmd string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	c := exec.Command("debugfs", "-R", cmd, img)
	c.Stdout, c.Stderr = &o, &e
	err = c.Run()
	return o.String(), e.String(), err
}

// debugfsErrors returns debugfs's stderr without its version banner.
func debugfsErrors(stderr string) string {
	var keep []string
	for _, l := range strings.Split(stderr, "\n") {
		if l != "" && !strings.HasPrefix(l, "debugfs ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// debugfsCmd runs cmd with debugfs on img and returns its stdout; any
// complaint by debugfs fails t.
func debugfsCmd(t testing.TB, img, cmd string) string {
	t.Helper()
	requireTool(t, "debugfs")
	stdout, stderr, err := debugfsRun(img, cmd)
	if err != nil || debugfsErrors(stderr) != "" {
		t.Fatalf("debugfs -R '%s' %s: %v %s", cmd, img, err, debugfsErrors(stderr))
	}
	return stdout
}

// debugfsScript runs cmds with debugfs -w -f on img, failing on any complaint.
func debugfsScript(img string, cmds []string) error {
	f, err := os.CreateTemp("", "debugfs-cmds-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(strings.Join(cmds, "\n") + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	var o, e bytes.Buffer
	c := exec.Command("debugfs", "-w", "-f", f.Name(), img)
	c.Stdout, c.Stderr = &o, &e
	if err := c.Run(); err != nil {
		return fmt.Errorf("debugfs -w -f: %v\n%s", err, e.String())
	}
	if msg := debugfsErrors(e.String()); msg != "" {
		return fmt.Errorf("debugfs -w -f: %s", msg)
	}
	return nil
}

// debugfsWrite runs write requests on img with debugfs -w, failing t on
// any complaint.
func debugfsWrite(t testing.TB, img string, cmds ...string) {
	t.Helper()
	requireTool(t, "debugfs")
	if err := debugfsScript(img, cmds); err != nil {
		t.Fatal(err)
	}
}

// debugfsCat returns the bytes of the file at path in img.
func debugfsCat(t testing.TB, img, path string) []byte {
	t.Helper()
	return []byte(debugfsCmd(t, img, "cat "+dq(path)))
}

// debugfsReadlink returns the target of the symlink at path in img.
func debugfsReadlink(t testing.TB, img, path string) string {
	t.Helper()
	out := debugfsCmd(t, img, "stat "+dq(path))
	if m := regexp.MustCompile(`(?m)^Fast link dest: "(.*)"$`).FindStringSubmatch(out); m != nil {
		return m[1]
	}
	// A slow symlink keeps its target in a data block.
	return strings.TrimRight(string(debugfsCat(t, img, path)), "\x00")
}

// dfStat is what debugfs stat says about an inode.
type dfStat struct {
	Ino      uint32
	Mode     uint32 // S_IFMT | 07777
	UID, GID uint32
	Size     int64
	Links    uint32
	Flags    uint32
	Extents  string // the EXTENTS: section, if any
}

// Type returns 'f', 'd', 'l' or '?' like fxEntry.Type.
func (s dfStat) Type() byte {
	switch s.Mode & 0o170000 {
	case 0o100000:
		return 'f'
	case 0o040000:
		return 'd'
	case 0o120000:
		return 'l'
	}
	return '?'
}

var (
	reStatHead  = regexp.MustCompile(`Inode: (\d+)\s+Type: (\S+)\s+Mode:\s+(\d+)\s+Flags: 0x([0-9a-f]+)`)
	reStatOwner = regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+)`)
	reStatSize  = regexp.MustCompile(`Size: (\d+)`)
	reStatLinks = regexp.MustCompile(`Links: (\d+)`)
	dfTypeBits  = map[string]uint32{"regular": 0o100000, "directory": 0o040000, "symlink": 0o120000,
		"FIFO": 0o010000, "socket": 0o140000, "character": 0o020000, "block": 0o060000}
)

// debugfsStat parses debugfs stat of path in img.
func debugfsStat(t testing.TB, img, path string) dfStat {
	t.Helper()
	out := debugfsCmd(t, img, "stat "+dq(path))
	s, err := parseDebugfsStat(out)
	if err != nil {
		t.Fatalf("debugfs stat %s: %v\n%s", path, err, out)
	}
	return s
}

// parseDebugfsStat parses the output of debugfs stat.
func parseDebugfsStat(out string) (dfStat, error) {
	var s dfStat
	h := reStatHead.FindStringSubmatch(out)
	o := reStatOwner.FindStringSubmatch(out)
	z := reStatSize.FindStringSubmatch(out)
	l := reStatLinks.FindStringSubmatch(out)
	if h == nil || o == nil || z == nil || l == nil {
		return s, errors.New("unexpected output")
	}
	u := func(v string, base int) uint32 { n, _ := strconv.ParseUint(v, base, 32); return uint32(n) }
	s.Ino = u(h[1], 10)
	s.Mode = dfTypeBits[h[2]] | u(h[3], 8)
	s.Flags = u(h[4], 16)
	s.UID, s.GID = u(o[1], 10), u(o[2], 10)
	s.Size, _ = strconv.ParseInt(z[1], 10, 64)
	s.Links = u(l[1], 10)
	if i := strings.Index(out, "EXTENTS:\n"); i >= 0 {
		s.Extents = strings.TrimSpace(out[i+len("EXTENTS:\n"):])
	}
	return s, nil
}

// eaList returns the extended attributes of path in img, read back exactly
// with debugfs ea_get (ea_list only to learn the names).
func eaList(t testing.TB, img, path string) map[string][]byte {
	t.Helper()
	out := debugfsCmd(t, img, "ea_list "+dq(path))
	attrs := map[string][]byte{}
	tmp := filepath.Join(t.TempDir(), "ea")
	for _, line := range strings.Split(out, "\n") {
		m := reEaLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		debugfsCmd(t, img, fmt.Sprintf("ea_get -f %s %s %s", dq(tmp), dq(path), m[1]))
		v, err := os.ReadFile(tmp)
		if err != nil {
			t.Fatal(err)
		}
		if strconv.Itoa(len(v)) != m[2] {
			t.Fatalf("ea_get %s %s: %d bytes, ea_list says %s", path, m[1], len(v), m[2])
		}
		attrs[m[1]] = v
	}
	return attrs
}

// dfDirent is one line of debugfs ls -p.
type dfDirent struct {
	Ino      uint32
	Mode     uint32
	UID, GID uint32
	Name     string
	Size     int64
}

// debugfsLs lists directory path of img (without . and ..), in on-disk order.
func debugfsLs(t testing.TB, img, path string) []dfDirent {
	t.Helper()
	return parseLsP(debugfsCmd(t, img, "ls -p "+dq(path)))
}

// parseLsP parses the output of debugfs ls -p, leaving out . and ..
func parseLsP(out string) []dfDirent {
	var ents []dfDirent
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "/")
		if len(f) != 8 || f[0] != "" || f[5] == "." || f[5] == ".." {
			continue
		}
		var d dfDirent
		n := func(v string, base int) uint32 { x, _ := strconv.ParseUint(v, base, 32); return uint32(x) }
		d.Ino, d.Mode, d.UID, d.GID, d.Name = n(f[1], 10), n(f[2], 8), n(f[3], 10), n(f[4], 10), f[5]
		d.Size, _ = strconv.ParseInt(f[6], 10, 64)
		ents = append(ents, d)
	}
	return ents
}

// debugfsBatch runs read-only cmds in one debugfs -f run and returns the
// output of each; any complaint fails t. Only for commands whose output
// cannot contain a line starting "debugfs: " (not cat).
func debugfsBatch(t testing.TB, img string, cmds []string) []string {
	t.Helper()
	if len(cmds) == 0 {
		return nil
	}
	script := filepath.Join(t.TempDir(), "cmds")
	if err := os.WriteFile(script, []byte(strings.Join(cmds, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var o, e bytes.Buffer
	c := exec.Command("debugfs", "-f", script, img)
	c.Stdout, c.Stderr = &o, &e
	if err := c.Run(); err != nil || debugfsErrors(e.String()) != "" {
		t.Fatalf("debugfs -f (%s ...): %v %s", cmds[0], err, debugfsErrors(e.String()))
	}
	outs := strings.Split(o.String(), "debugfs: ")
	if len(outs) != len(cmds)+1 {
		t.Fatalf("debugfs -f: %d outputs for %d commands", len(outs)-1, len(cmds))
	}
	res := make([]string, len(cmds))
	for i, out := range outs[1:] {
		if !strings.HasPrefix(out, cmds[i]+"\n") {
			t.Fatalf("debugfs -f: output %d is not for %q: %.80q", i, cmds[i], out)
		}
		res[i] = strings.TrimPrefix(out, cmds[i]+"\n")
	}
	return res
}

// reEaLine matches one attribute in debugfs ea_list output: name, length.
var reEaLine = regexp.MustCompile(`^  (\S+) \((\d+)\)`)

// debugfsBlocks returns the physical data block numbers of path in img.
func debugfsBlocks(t testing.TB, img, path string) []uint64 {
	t.Helper()
	var blocks []uint64
	for _, f := range strings.Fields(debugfsCmd(t, img, "blocks "+dq(path))) {
		b, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			t.Fatalf("debugfs blocks %s: %q", path, f)
		}
		blocks = append(blocks, b)
	}
	return blocks
}

// debugfsFeatures returns the feature names set in img's superblock.
func debugfsFeatures(t testing.TB, img string) map[string]bool {
	t.Helper()
	out := debugfsCmd(t, img, "features")
	feats := map[string]bool{}
	for _, f := range strings.Fields(strings.TrimPrefix(strings.TrimSpace(out), "Filesystem features:")) {
		feats[f] = true
	}
	return feats
}

// debugfsRdump copies directory path of img with everything below it into
// the new directory dst/<base of path>.
func debugfsRdump(t testing.TB, img, path, dst string) {
	t.Helper()
	debugfsCmd(t, img, "rdump "+dq(path)+" "+dq(dst))
}

// shmDir returns a tmpfs directory for scratch trees when there is one
// (creating thousands of files on a busy disk costs seconds), else "".
func shmDir() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return ""
}

// shmTempDir is t.TempDir, on tmpfs when there is one.
func shmTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp(shmDir(), "imgbake-ext4-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// htreeIndexed reports whether directory path of img is hash-indexed.
func htreeIndexed(t testing.TB, img, path string) bool {
	t.Helper()
	stdout, _, err := debugfsRun(img, "htree_dump "+dq(path))
	return err == nil && strings.Contains(stdout, "Root node dump")
}

// verifyModel checks img against m with e2fsck -fn and a full debugfs
// read-back: rdump for the names, bytes and symlink targets, ls -p for types,
// modes, owners, sizes and inode sharing, ea_list/ea_get for xattrs.
func verifyModel(t testing.TB, img string, m model) {
	t.Helper()
	e2fsckClean(t, img)
	errs := 0
	fail := func(format string, args ...any) {
		t.Helper()
		if errs++; errs <= 25 {
			t.Errorf(format, args...)
		}
	}
	defer func() {
		if errs > 25 {
			t.Errorf("... %d differences in all", errs)
		}
	}()
	dump := shmTempDir(t)
	debugfsRdump(t, img, "/", dump)
	seen := map[string]bool{}
	filepath.WalkDir(dump, func(hp string, d fs.DirEntry, err error) error {
		if err != nil || hp == dump {
			return err
		}
		p := strings.TrimPrefix(hp, dump)
		if p == "/lost+found" {
			return fs.SkipDir
		}
		seen[p] = true
		n := m[p]
		switch {
		case n == nil:
			fail("%s: in the image, not written", p)
		case d.Type()&fs.ModeSymlink != 0:
			if got, _ := os.Readlink(hp); n.Type != 'l' || got != n.Target {
				fail("%s: symlink to %q, want type %c target %q", p, got, n.Type, n.Target)
			}
		case d.IsDir():
			if n.Type != 'd' {
				fail("%s: a directory, want type %c", p, n.Type)
			}
		default:
			got, _ := os.ReadFile(hp)
			if n.Type != 'f' || !bytes.Equal(got, n.Data) {
				fail("%s: %d bytes differ from the %d written (type %c)", p, len(got), len(n.Data), n.Type)
			}
		}
		return nil
	})
	for _, p := range m.sorted() {
		if !seen[p] {
			fail("%s: missing from the image", p)
		}
	}
	verifyListing(t, img, m, seen, fail)
	verifyXattrs(t, img, m, seen, fail)
}

// verifyListing compares debugfs ls -p of every directory with m.
func verifyListing(t testing.TB, img string, m model, seen map[string]bool, fail func(string, ...any)) {
	t.Helper()
	dirs := []string{"/"}
	for _, p := range m.sorted() {
		if m[p].Type == 'd' && seen[p] {
			dirs = append(dirs, p)
		}
	}
	cmds := make([]string, len(dirs))
	for i, d := range dirs {
		cmds[i] = "ls -p " + dq(d)
	}
	inoOf := map[*mNode]uint32{}
	nodeOf := map[uint32]string{}
	for i, out := range debugfsBatch(t, img, cmds) {
		for _, e := range parseLsP(out) {
			p := path.Join(dirs[i], e.Name)
			n := m[p]
			if n == nil || p == "/lost+found" || e.Ino == 0 || e.Name == "" {
				continue // reported by the rdump walk
			}
			if e.Mode != modeOf(n) || e.UID != n.UID || e.GID != n.GID {
				fail("%s: mode %o uid %d gid %d, want %o %d %d", p, e.Mode, e.UID, e.GID, modeOf(n), n.UID, n.GID)
			}
			if n.Type == 'f' && e.Size != int64(len(n.Data)) {
				fail("%s: size %d, want %d", p, e.Size, len(n.Data))
			}
			if ino, ok := inoOf[n]; ok && ino != e.Ino {
				fail("%s: inode %d, want %d (a hard link)", p, e.Ino, ino)
			}
			if other, ok := nodeOf[e.Ino]; ok && m[other] != n {
				fail("%s: shares inode %d with %s", p, e.Ino, other)
			}
			inoOf[n], nodeOf[e.Ino] = e.Ino, p
		}
	}
}

// verifyXattrs compares every inode's xattrs with m.
func verifyXattrs(t testing.TB, img string, m model, seen map[string]bool, fail func(string, ...any)) {
	t.Helper()
	var paths []string
	for _, p := range m.sorted() {
		if seen[p] {
			paths = append(paths, p)
		}
	}
	cmds := make([]string, len(paths))
	for i, p := range paths {
		cmds[i] = "ea_list " + dq(p)
	}
	tmp := t.TempDir()
	var gets []string
	var want [][]byte
	for i, out := range debugfsBatch(t, img, cmds) {
		p, n := paths[i], m[paths[i]]
		got := map[string]int{}
		for _, line := range strings.Split(out, "\n") {
			if f := reEaLine.FindStringSubmatch(line); f != nil {
				got[f[1]], _ = strconv.Atoi(f[2])
			}
		}
		if fmt.Sprint(slices.Sorted(maps.Keys(got))) != fmt.Sprint(slices.Sorted(maps.Keys(n.Xattrs))) {
			fail("%s: xattrs %v, want %v", p, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(n.Xattrs)))
			continue
		}
		for _, k := range slices.Sorted(maps.Keys(n.Xattrs)) {
			gets = append(gets, fmt.Sprintf("ea_get -f %s %s %s", dq(filepath.Join(tmp, strconv.Itoa(len(gets)))), dq(p), k))
			want = append(want, n.Xattrs[k])
		}
	}
	debugfsBatch(t, img, gets)
	for i, g := range gets {
		if b, err := os.ReadFile(filepath.Join(tmp, strconv.Itoa(i))); err != nil || !bytes.Equal(b, want[i]) {
			fail("%s: got %q (%v), want %q", g, b, err, want[i])
		}
	}
}

// An in-memory model of a filesystem tree, the reference that write tests
// compare the image with (through debugfs and through the package's own
// read side).

// replaceKeepsXattrs says what WriteFile/CreateFile over an existing file do
// with its extended attributes: O_TRUNC semantics keep the inode, so they
// stay (and hard links see the new content).
const replaceKeepsXattrs = true

// mNode is one inode of the model; hard links share a *mNode.
type mNode struct {
	Type     byte // 'f', 'd', 'l'
	Perm     uint32
	UID, GID uint32
	Data     []byte
	Target   string
	Xattrs   map[string][]byte
}

// model maps absolute paths ("/" excluded) to nodes.
type model map[string]*mNode

// newModel returns the model of a fixture tree.
func newModel(tree []fxEntry) model {
	m := model{}
	for i := range tree {
		e := &tree[i]
		if e.Type == 'h' {
			m[e.Path] = m[e.Target]
			continue
		}
		n := &mNode{Type: e.Type, Perm: e.Perm, UID: e.UID, GID: e.GID, Target: e.Target, Xattrs: map[string][]byte{}}
		if e.Type == 'f' {
			n.Data = e.content()
		}
		for k, v := range e.Xattrs {
			n.Xattrs[k] = v
		}
		m[e.Path] = n
	}
	return m
}

// sorted returns the model's paths in lexical order.
func (m model) sorted() []string {
	ps := make([]string, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// links returns the link count every node must have.
func (m model) links() map[*mNode]uint32 {
	l := map[*mNode]uint32{}
	for p, n := range m {
		if n.Type == 'd' {
			l[n] += 2
			if p := path.Dir(p); p != "/" {
				l[m[p]]++
			}
			continue
		}
		l[n]++
	}
	return l
}

// children returns how many entries each directory holds.
func (m model) children() map[string]int {
	c := map[string]int{}
	for p := range m {
		c[path.Dir(p)]++
	}
	return c
}

// modeOf returns the full i_mode of n.
func modeOf(n *mNode) uint32 {
	return map[byte]uint32{'f': 0o100000, 'd': 0o040000, 'l': 0o120000}[n.Type] | n.Perm
}
