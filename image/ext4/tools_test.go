package ext4_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
		m := regexp.MustCompile(`^  (\S+) \((\d+)\)`).FindStringSubmatch(line)
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
	out := debugfsCmd(t, img, "ls -p "+dq(path))
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

// htreeIndexed reports whether directory path of img is hash-indexed.
func htreeIndexed(t testing.TB, img, path string) bool {
	t.Helper()
	stdout, _, err := debugfsRun(img, "htree_dump "+dq(path))
	return err == nil && strings.Contains(stdout, "Root node dump")
}
