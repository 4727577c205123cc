package ext4_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imgbake/imgbake/image/ext4"
)

// An in-memory model of a filesystem tree, the reference that write tests
// compare the image with (through debugfs and through the package's own
// read side).

var seedFlag = flag.Uint64("seed", 0, "seed for TestRandom (0: from the clock)")

// verifyAPI reads the whole tree back through f (Walk, Lstat, Stat,
// ReadDir, ReadFile, Open, Readlink, ListXattrs, Getxattr) and compares it
// with m.
func verifyAPI(t testing.TB, f *ext4.FS, m model) {
	t.Helper()
	errs := 0
	fail := func(format string, args ...any) {
		t.Helper()
		if errs++; errs <= 25 {
			t.Errorf(format, args...)
		}
	}
	links := m.links()
	seen := map[string]bool{}
	var order []string
	err := f.Walk("/", func(p string, fi *ext4.FileInfo, err error) error {
		if err != nil {
			fail("walking %s: %v", p, err)
			return nil
		}
		if p == "/lost+found" {
			return fs.SkipDir
		}
		if p == "/" {
			return nil
		}
		seen[p] = true
		order = append(order, p)
		n := m[p]
		if n == nil {
			fail("%s: found by Walk, not written", p)
			return nil
		}
		verifyAPINode(f, p, fi, n, m, links, fail)
		return nil
	})
	if err != nil {
		fail("Walk: %v", err)
	}
	// Lexical order is per directory, as filepath.Walk's: "/a/b" comes
	// before "/a-c" although '-' sorts before '/' in the whole strings.
	if !sort.SliceIsSorted(order, func(i, j int) bool { return walkLess(order[i], order[j]) }) {
		fail("Walk did not visit in lexical order")
	}
	for _, p := range m.sorted() {
		if !seen[p] {
			fail("%s: not found by Walk", p)
		}
	}
	if errs > 25 {
		t.Errorf("... %d differences in all", errs)
	}
}

// verifyAPINode compares one path read through f with model node n.
func verifyAPINode(f *ext4.FS, p string, fi *ext4.FileInfo, n *mNode, m model, links map[*mNode]uint32, fail func(string, ...any)) {
	if fi.Mode != modeOf(n) || fi.UID != n.UID || fi.GID != n.GID || fi.Name != path.Base(p) {
		fail("%s: Walk says %q mode %o uid %d gid %d, want mode %o uid %d gid %d",
			p, fi.Name, fi.Mode, fi.UID, fi.GID, modeOf(n), n.UID, n.GID)
	}
	if fi.Nlink != links[n] {
		fail("%s: Nlink %d, want %d", p, fi.Nlink, links[n])
	}
	switch n.Type {
	case 'f':
		b, err := f.ReadFile(p)
		if err != nil || !bytes.Equal(b, n.Data) || fi.Size != int64(len(n.Data)) {
			fail("%s: ReadFile %d bytes (%v), Size %d; want %d bytes", p, len(b), err, fi.Size, len(n.Data))
		}
	case 'l':
		if got, err := f.Readlink(p); err != nil || got != n.Target {
			fail("%s: Readlink %q, %v; want %q", p, got, err, n.Target)
		}
	case 'd':
		ents, err := f.ReadDir(p)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name)
			if c := m[path.Join(p, e.Name)]; c != nil && e.Type != map[byte]uint8{'f': 1, 'd': 2, 'l': 7}[c.Type] {
				fail("%s/%s: dirent type %d, want type %c", p, e.Name, e.Type, c.Type)
			}
		}
		if err != nil || !sort.StringsAreSorted(names) {
			fail("%s: ReadDir %v, sorted %v", p, err, sort.StringsAreSorted(names))
		}
	}
	if n.Type == 'l' {
		return // xattrs on symlinks are not written by these tests
	}
	xs, err := f.ListXattrs(p)
	if err != nil || fmt.Sprint(slices.Sorted(maps.Keys(xs))) != fmt.Sprint(slices.Sorted(maps.Keys(n.Xattrs))) {
		fail("%s: ListXattrs %v (%v), want %v", p, slices.Sorted(maps.Keys(xs)), err, slices.Sorted(maps.Keys(n.Xattrs)))
		return
	}
	for k, v := range n.Xattrs {
		if !bytes.Equal(xs[k], v) {
			fail("%s: ListXattrs %s = %q, want %q", p, k, xs[k], v)
		}
		if g, err := f.Getxattr(p, k); err != nil || !bytes.Equal(g, v) {
			fail("%s: Getxattr %s = %q (%v), want %q", p, k, g, err, v)
		}
	}
}

// testNow is the clock the write tests give Options.Now.
func testNow() time.Time { return time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC) }

// openImage opens the filesystem in image file img; the FS is closed (and
// the error checked) at the end of the test unless the test closed it.
func openImage(t testing.TB, img string, readOnly bool) *ext4.FS {
	t.Helper()
	f, err := openFSErr(img, readOnly)
	if err != nil {
		t.Fatalf("opening %s: %v", img, err)
	}
	return f
}

// openFSErr opens img for ext4.Open.
func openFSErr(img string, readOnly bool) (*ext4.FS, error) {
	flags := os.O_RDWR
	if readOnly {
		flags = os.O_RDONLY
	}
	fh, err := os.OpenFile(img, flags, 0)
	if err != nil {
		return nil, err
	}
	fi, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, err
	}
	f, err := ext4.Open(fh, 0, fi.Size(), &ext4.Options{ReadOnly: readOnly, Now: testNow})
	if err != nil {
		fh.Close()
		return nil, err
	}
	// The os.File is left to the garbage collector's finalizer: FS.Close
	// is what the tests check.
	return f, nil
}

// randomIters returns how many operations TestRandom runs per kind.
func randomIters() int {
	if n, err := strconv.Atoi(os.Getenv("IMGBAKE_RANDOM_ITER")); err == nil && n > 0 {
		return n
	}
	return 300
}

// TestRandom runs long random sequences of writes against every fixture kind
// and an in-memory model, comparing them at checkpoints and at the end.
func TestRandom(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	for _, kind := range fxKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			defer func() {
				if t.Failed() {
					t.Logf("reproduce: go test ./image/ext4 -run 'TestRandom/^%s$' -seed=%d (IMGBAKE_RANDOM_ITER=%d)", kind, seed, randomIters())
				}
			}()
			img := makeFixture(t, kind, 64)
			r := &randomRun{t: t, m: newModel(fixtureTree(kind)), rng: rand.New(rand.NewPCG(seed, 0))}
			r.f = openImage(t, img, false)
			iters := randomIters()
			checkEvery := max(iters/2, 50)
			for i := 1; i <= iters && !t.Failed(); i++ {
				r.step(i)
				if i%checkEvery == 0 && i < iters {
					if err := r.f.Sync(); err != nil {
						t.Fatalf("Sync after op %d: %v", i, err)
					}
					verifyModel(t, img, r.m)
				}
			}
			t.Logf("%d operations, %d paths at the end, %d writes refused for lack of space, %d bytes free",
				iters, len(r.m), r.noSpace, r.f.FreeBytes())
			verifyAPI(t, r.f, r.m)
			if err := r.f.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			verifyModel(t, img, r.m)
		})
	}
}

// errorsIsAny reports whether err matches one of targets.
func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// randomRun applies random operations to f and m alike.
type randomRun struct {
	t       *testing.T
	f       *ext4.FS
	m       model
	rng     *rand.Rand
	noSpace int // writes refused with ErrNoSpace
}

// pick returns a random model path whose node satisfies ok, or "".
func (r *randomRun) pick(ok func(p string, n *mNode) bool) string {
	var cands []string
	for _, p := range r.m.sorted() {
		if ok(p, r.m[p]) {
			cands = append(cands, p)
		}
	}
	if len(cands) == 0 {
		return ""
	}
	return cands[r.rng.IntN(len(cands))]
}

// newName returns a name not yet in directory dir: mostly short, sometimes
// up to the 255-byte limit.
func (r *randomRun) newName(dir string) string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789-_."
	for {
		n := 1 + r.rng.IntN(20)
		if r.rng.IntN(20) == 0 {
			n = 200 + r.rng.IntN(56)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = chars[r.rng.IntN(len(chars))]
		}
		name := string(b)
		if name == "." || name == ".." || name == "lost+found" {
			continue
		}
		if _, taken := r.m[path.Join(dir, name)]; !taken {
			return path.Join(dir, name)
		}
	}
}

// attr returns random attributes.
func (r *randomRun) attr() ext4.Attr {
	a := ext4.Attr{Mode: uint16(r.rng.IntN(0o10000)), UID: uint32(r.rng.IntN(3) * 1000), GID: uint32(r.rng.IntN(3) * 100)}
	if r.rng.IntN(2) == 0 {
		a.Mtime = time.Unix(1700000000+r.rng.Int64N(1e8), 0)
	}
	return a
}

// data returns random content: usually small, sometimes megabytes.
func (r *randomRun) data() []byte {
	var n int
	switch r.rng.IntN(10) {
	case 0:
		n = 0
	case 1, 2, 3, 4:
		n = r.rng.IntN(200)
	case 5, 6, 7:
		n = r.rng.IntN(20000)
	case 8:
		n = 100000 + r.rng.IntN(300000)
	default:
		n = 1<<20 + r.rng.IntN(2<<20)
	}
	return fxBytes(strconv.FormatUint(r.rng.Uint64(), 10), n)
}

func isDir(_ string, n *mNode) bool  { return n.Type == 'd' }
func isFile(_ string, n *mNode) bool { return n.Type == 'f' }

// step runs operation number i.
func (r *randomRun) step(i int) {
	t, f, m := r.t, r.f, r.m
	must := func(op string, err error) bool {
		t.Helper()
		if err != nil {
			t.Errorf("op %d: %s: %v", i, op, err)
			return false
		}
		return true
	}
	dir := r.pick(isDir)
	if f.FreeBytes() < f.Size()/4 { // keep room: free a big file
		p := r.pick(func(p string, n *mNode) bool { return n.Type == 'f' && len(n.Data) > 50000 })
		if p != "" && must("remove "+p, f.Remove(p)) {
			delete(m, p)
			return
		}
	}
	switch op := r.rng.IntN(100); {
	case op < 25: // create
		p, d, a := r.newName(dir), r.data(), r.attr()
		free := f.FreeBytes()
		var err error
		if r.rng.IntN(2) == 0 {
			err = f.WriteFile(p, d, a)
		} else {
			err = f.CreateFile(p, bytes.NewReader(d), int64(len(d)), a)
		}
		if r.full(i, "create "+p, err, free, len(d)) {
			return
		}
		if must("create "+p, err) {
			m[p] = &mNode{Type: 'f', Perm: uint32(a.Mode), UID: a.UID, GID: a.GID, Data: d, Xattrs: map[string][]byte{}}
		}
	case op < 37: // replace (O_TRUNC)
		links := m.links()
		p := r.pick(func(p string, n *mNode) bool { return n.Type == 'f' && links[n] == 1 })
		if p == "" {
			return
		}
		d, a := r.data(), r.attr()
		free := f.FreeBytes()
		err := f.WriteFile(p, d, a)
		if r.full(i, "replace "+p, err, free, len(d)) {
			return
		}
		if must("replace "+p, err) {
			n := m[p]
			n.Data, n.Perm, n.UID, n.GID = d, uint32(a.Mode), a.UID, a.GID
			if !replaceKeepsXattrs {
				n.Xattrs = map[string][]byte{}
			}
		}
	case op < 50: // remove
		kids := m.children()
		p := r.pick(func(p string, n *mNode) bool { return n.Type != 'd' || kids[p] == 0 })
		if p != "" && must("remove "+p, f.Remove(p)) {
			delete(m, p)
		}
	case op < 58: // mkdir -p
		p := r.newName(dir)
		q := p + "/" + path.Base(r.newName(p))
		a := r.attr()
		a.Mode |= 0o700 // keep it usable for rdump as non-root
		if must("mkdirall "+q, f.MkdirAll(q, a)) {
			for _, d := range []string{p, q} {
				m[d] = &mNode{Type: 'd', Perm: uint32(a.Mode), UID: a.UID, GID: a.GID, Xattrs: map[string][]byte{}}
			}
		}
	case op < 66: // symlink, fast or slow
		p, a := r.newName(dir), r.attr()
		target := string(fxBytes(p, 1+r.rng.IntN(120)))
		target = strings.Map(func(c rune) rune { return 'a' + (c % 26) }, target)
		if must("symlink "+p, f.Symlink(target, p, a)) {
			m[p] = &mNode{Type: 'l', Perm: 0o777, UID: a.UID, GID: a.GID, Target: target, Xattrs: map[string][]byte{}}
		}
	case op < 74: // chmod
		p := r.pick(func(p string, n *mNode) bool { return n.Type != 'l' })
		mode := uint16(r.rng.IntN(0o10000))
		if m[p].Type == 'd' {
			mode |= 0o700
		}
		if must("chmod "+p, f.Chmod(p, mode)) {
			m[p].Perm = uint32(mode)
		}
	case op < 80: // chown
		p := r.pick(func(p string, n *mNode) bool { return n.Type != 'l' })
		uid, gid := uint32(r.rng.IntN(70000)), uint32(r.rng.IntN(70000))
		if must("chown "+p, f.Chown(p, uid, gid)) {
			m[p].UID, m[p].GID = uid, gid
		}
	case op < 92: // setxattr
		p := r.pick(func(p string, n *mNode) bool { return n.Type != 'l' })
		name := []string{"user.a", "user.bb", "user.comment", "trusted.t", "security.capability"}[r.rng.IntN(5)]
		v := fxBytes(strconv.Itoa(i), r.rng.IntN(min(200, f.BlockSize()/8)))
		if name == "security.capability" {
			v = capNetRaw
		}
		if must("setxattr "+p+" "+name, f.SetXattr(p, name, v)) {
			m[p].Xattrs[name] = v
		}
	default:
		r.stepRefused(i)
	}
}

// full reports whether err is an acceptable ErrNoSpace for writing n bytes
// when free bytes were free, and checks that the failed write left the free
// space as it was (nothing half-written; the model is unchanged too).
func (r *randomRun) full(i int, op string, err error, free int64, n int) bool {
	if !errors.Is(err, ext4.ErrNoSpace) {
		return false
	}
	slack := int64(r.f.BlockSize()) * 64
	if int64(n)+slack < free {
		r.t.Errorf("op %d: %s: %v with %d bytes to write and %d free", i, op, err, n, free)
	}
	if after := r.f.FreeBytes(); after != free {
		r.t.Errorf("op %d: %s failed with %v but free space went from %d to %d", i, op, err, free, after)
	}
	r.noSpace++
	return true
}

// stepRefused tries an operation that must fail with a given error and
// change nothing.
func (r *randomRun) stepRefused(i int) {
	t, f, m := r.t, r.f, r.m
	kids := m.children()
	file, dir := r.pick(isFile), r.pick(func(p string, n *mNode) bool { return n.Type == 'd' && kids[p] > 0 })
	check := func(op string, err error, want ...error) {
		t.Helper()
		if !errorsIsAny(err, want...) {
			t.Errorf("op %d: %s: got %v, want one of %v", i, op, err, want)
		}
	}
	switch r.rng.IntN(6) {
	case 0:
		check("create under file "+file, f.WriteFile(file+"/x", []byte("x"), ext4.Attr{Mode: 0o644}), ext4.ErrNotDir)
	case 1:
		check("remove non-empty "+dir, f.Remove(dir), ext4.ErrNotEmpty)
	case 2:
		check("remove missing", f.Remove(r.newName(dir)), fs.ErrNotExist)
	case 3:
		check("write over dir "+dir, f.WriteFile(dir, []byte("x"), ext4.Attr{Mode: 0o644}), ext4.ErrIsDir, fs.ErrExist)
	case 4:
		check("symlink over "+file, f.Symlink("x", file, ext4.Attr{}), fs.ErrExist)
	case 5:
		check("mkdir over "+file, f.MkdirAll(file, ext4.Attr{Mode: 0o755}), fs.ErrExist, ext4.ErrNotDir)
	}
}

// walkLess orders paths as a depth-first walk that visits each directory's
// entries sorted by name: component by component.
func walkLess(a, b string) bool {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if as[i] != bs[i] {
			return as[i] < bs[i]
		}
	}
	return len(as) < len(bs)
}
