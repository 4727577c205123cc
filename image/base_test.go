package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgbake/imgbake/internal/fixture"
	"github.com/imgbake/imgbake/internal/progress"
)

// testRaw writes a 12 MiB image of compressible data with large zero runs.
func testRaw(t testing.TB, dir string) (string, []byte) {
	t.Helper()
	data := fixture.CompressibleData(12 << 20)
	p := filepath.Join(dir, "base.img")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestPrepareBaseFormats(t *testing.T) {
	fixture.NeedTools(t, "xz", "gzip", "zstd", "zip")
	dir := t.TempDir()
	raw, data := testRaw(t, dir)
	type tc struct {
		name string
		make func(out string)
		goXZ bool // decode .xz in Go: no xz program on PATH
	}
	cases := []tc{
		{name: "xz-multiblock-crc64", make: func(o string) { sh(t, "xz -1 -T2 --block-size=1MiB -c "+raw+" > "+o) }},
		{name: "xz-crc32", make: func(o string) { sh(t, "xz -1 -C crc32 --block-size=3MiB -c "+raw+" > "+o) }},
		{name: "xz-sha256", make: func(o string) { sh(t, "xz -1 -C sha256 --block-size=2MiB -c "+raw+" > "+o) }},
		{name: "xz-nocheck", make: func(o string) { sh(t, "xz -1 -C none --block-size=2MiB -c "+raw+" > "+o) }},
		{name: "xz-single-block", make: func(o string) { sh(t, "xz -1 -T1 -c "+raw+" > "+o) }},
		{name: "xz-two-streams-padded", make: func(o string) {
			sh(t, "head -c 5000000 "+raw+" | xz -1 --block-size=1MiB > "+o+
				" && printf '\\0\\0\\0\\0\\0\\0\\0\\0' >> "+o+" && tail -c +5000001 "+raw+" | xz -1 --block-size=1MiB >> "+o)
		}},
		{name: "gzip", make: func(o string) { sh(t, "gzip -1 -c "+raw+" > "+o) }},
		{name: "zstd", make: func(o string) { sh(t, "zstd -q -c "+raw+" > "+o) }},
		{name: "zip", make: func(o string) { sh(t, "cd "+dir+" && zip -q "+o+".zip base.img && mv "+o+".zip "+o) }},
	}
	for _, c := range cases {
		if strings.HasPrefix(c.name, "xz-") {
			cases = append(cases, tc{name: c.name + "-go", make: c.make, goXZ: true})
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := filepath.Join(t.TempDir(), "in")
			c.make(in)
			if c.goXZ {
				t.Setenv("PATH", t.TempDir())
			}
			inSum := sha(mustRead(t, in))
			cache := filepath.Join(t.TempDir(), "cache")
			var logged bytes.Buffer
			b, err := PrepareBase(context.Background(), in, cache, PrepareOptions{
				Log: slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			if err != nil {
				t.Fatal(err)
			}
			// xz is decoded by the xz program when it is installed.
			if strings.HasPrefix(c.name, "xz-") && strings.Contains(logged.String(), "with the xz program") == c.goXZ {
				t.Errorf("xz program used: %v, want %v:\n%s", !c.goXZ, !c.goXZ, logged.String())
			}
			// The cells are hashed while decompressing, not read back after.
			if strings.Contains(logged.String(), "computed the base's cell checksums") {
				t.Errorf("the decompressed image was read back for its cell checksums:\n%s", logged.String())
			}
			if b.InputSHA256 != inSum || b.Size != int64(len(data)) || filepath.Base(b.Path) != inSum+".img" {
				t.Errorf("base %+v: want input sum %s, size %d", b, inSum, len(data))
			}
			got := mustRead(t, b.Path)
			if !bytes.Equal(got, data) {
				t.Fatal("decompressed data differs from the original")
			}
			// The cells computed while decompressing are those of the file.
			want, err := computeCells(context.Background(), b.Path, progress.New(nil, "", 0))
			if err != nil {
				t.Fatal(err)
			}
			if b.cells == nil || b.cells.size != want.size || !slices.Equal(b.cells.sums, want.sums) {
				t.Error("the base's cell checksums differ from a computation over the decompressed image")
			}
			if cached, err := loadCells(filepath.Join(cache, inSum+"-"+strconv.FormatInt(b.Size, 10)+".cells"), b.Size); err != nil || !slices.Equal(cached.sums, want.sums) {
				t.Errorf("cached cell checksums: %v", err)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(b.Path, &st); err != nil {
				t.Fatal(err)
			}
			if used := st.Blocks * 512; used > int64(len(data))*3/4 {
				t.Errorf("cache file uses %d bytes on disk for %d bytes with 1/3 zeros: not sparse", used, len(data))
			}
			// A second call reuses the cache.
			before, _ := os.Stat(b.Path)
			b2, err := PrepareBase(context.Background(), in, cache, PrepareOptions{})
			if err != nil {
				t.Fatal(err)
			}
			after, _ := os.Stat(b2.Path)
			if b2.Path != b.Path || !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
				t.Error("second PrepareBase did not reuse the cached image")
			}
			if sha(mustRead(t, in)) != inSum {
				t.Error("input changed")
			}
			// The input may be remembered (TestPrepareBaseRemembersInput)
			// when the machine took racyWindow to get here.
			recs, _ := filepath.Glob(filepath.Join(cache, "input-*.json"))
			for _, r := range recs {
				os.Remove(r)
			}
			assertOnly(t, cache, inSum+"-"+strconv.FormatInt(b.Size, 10)+".cells", inSum+".img")
		})
	}
}

// TestPrepareBaseRemembersInput: the input's sha256 is remembered in the
// cache with the file's identity and reused without reading the file while
// the file is unchanged; any change (touch, a write that keeps the size
// and the mtime, a replacement) makes PrepareBase hash it again.
// --base-sha256 is checked against the remembered sum.
func TestPrepareBaseRemembersInput(t *testing.T) {
	fixture.NeedTools(t, "xz")
	old := racyWindow
	racyWindow = 50 * time.Millisecond
	t.Cleanup(func() { racyWindow = old })
	dir := t.TempDir()
	raw, _ := testRaw(t, dir)
	cache := filepath.Join(dir, "cache")
	for _, in := range []string{raw, raw + ".xz"} {
		t.Run(filepath.Ext(in), func(t *testing.T) {
			if in != raw {
				sh(t, "xz -1 -T2 --block-size=1MiB -c "+raw+" > "+in)
			}
			fresh := func() string { return sha(mustRead(t, in)) }
			prepare := func(o PrepareOptions) (*Base, error) {
				return PrepareBase(context.Background(), in, cache, o)
			}
			// Changed within racyWindow before it was hashed: not
			// remembered (the window is an hour here, so the test does not
			// depend on the machine's speed).
			racyWindow = time.Hour
			b, err := prepare(PrepareOptions{})
			racyWindow = 50 * time.Millisecond
			if err != nil || b.InputSHA256 != fresh() {
				t.Fatalf("first prepare: %v, sum %v", err, b)
			}
			st, _ := os.Stat(in)
			id, ok := identityOf(st)
			if !ok {
				t.Skip("no file identity on this platform: the input is hashed every time")
			}
			rec := inputRecordPath(cache, id)
			if _, err := os.Stat(rec); err == nil {
				t.Fatalf("%s remembered although it changed just before it was hashed", in)
			}
			time.Sleep(2 * racyWindow)
			if b, err = prepare(PrepareOptions{}); err != nil || b.InputSHA256 != fresh() {
				t.Fatalf("prepare: %v, sum %s", err, b.InputSHA256)
			}
			if _, err := os.Stat(rec); err != nil {
				t.Fatalf("sha256 not remembered: %v", err)
			}
			// Reused without reading the file: a planted sum comes back.
			planted := strings.Repeat("ab", 32)
			plant := func() {
				t.Helper()
				data := mustRead(t, rec)
				if err := os.WriteFile(rec, bytes.Replace(data, []byte(fresh()), []byte(planted), 1), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			plant()
			if in == raw { // a compressed input's planted sum has no cached image
				b, err := prepare(PrepareOptions{})
				if err != nil || b.InputSHA256 != planted {
					t.Fatalf("unchanged input: sum %v (%v), want the remembered %s", b, err, planted)
				}
				if _, err := prepare(PrepareOptions{SHA256: fresh()}); err == nil || !strings.Contains(err.Error(), "not the expected") {
					t.Errorf("--base-sha256 of the file's content accepted against a different remembered sum: %v", err)
				}
				if _, err := prepare(PrepareOptions{SHA256: planted}); err != nil {
					t.Errorf("--base-sha256 equal to the remembered sum: %v", err)
				}
			}
			check := func(what string) {
				t.Helper()
				b, err := prepare(PrepareOptions{})
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				if b.InputSHA256 != fresh() {
					t.Errorf("%s: sum %s, want the file's %s: not hashed again", what, b.InputSHA256, fresh())
				}
			}
			// touch
			time.Sleep(2 * racyWindow)
			plant()
			now := time.Now()
			if err := os.Chtimes(in, now, now); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * racyWindow)
			check("touched")
			// A write in place that keeps the size and puts the mtime back:
			// the ctime still moves.
			if in == raw {
				plant()
			} // else the true sum stays remembered, and names a cached image
			st, _ = os.Stat(in)
			f, err := os.OpenFile(in, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte{0xfd, '7', 'z', 'X'}, 100); err != nil { // keeps the xz magic valid
				t.Fatal(err)
			}
			f.Close()
			if err := os.Chtimes(in, st.ModTime(), st.ModTime()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * racyWindow)
			if in == raw {
				check("modified, mtime restored")
			} else if _, err := prepare(PrepareOptions{}); err == nil {
				t.Error("a corrupted .xz with its mtime restored was used: its remembered sum was trusted")
			}
		})
	}
}

func TestPrepareBaseRawInPlace(t *testing.T) {
	dir := t.TempDir()
	raw, data := testRaw(t, dir)
	b, err := PrepareBase(context.Background(), raw, "", PrepareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b.Path != raw || b.Format != "raw" || b.InputSHA256 != sha(data) || b.Size != int64(len(data)) {
		t.Errorf("raw base %+v", b)
	}
}

func TestPrepareBaseBadArchives(t *testing.T) {
	fixture.NeedTools(t, "xz", "gzip", "zstd", "zip")
	dir := t.TempDir()
	raw, _ := testRaw(t, dir)
	sh(t, "cp "+raw+" "+dir+"/other.img && cd "+dir+" && zip -q two.zip base.img other.img && echo hi > readme.txt && zip -q none.zip readme.txt")
	sh(t, "xz -1 -T2 --block-size=1MiB -c "+raw+" > "+dir+"/ok.xz")
	sh(t, "xz -1 -T1 -c "+raw+" > "+dir+"/one.xz")
	sh(t, "head -c 300000 "+dir+"/ok.xz > "+dir+"/trunc.xz")
	sh(t, "head -c 300000 "+dir+"/one.xz > "+dir+"/trunc1.xz")
	sh(t, "gzip -1 -c "+raw+" | head -c 200000 > "+dir+"/trunc.gz")
	sh(t, "zstd -q -c "+raw+" | head -c 200000 > "+dir+"/trunc.zst")
	sh(t, "zip -q -j "+dir+"/t.zip "+raw+" && head -c 200000 "+dir+"/t.zip > "+dir+"/trunc.zip")
	// Corrupt one byte in the middle of the compressed data of a block.
	ok := mustRead(t, dir+"/ok.xz")
	bad := bytes.Clone(ok)
	bad[len(bad)/2] ^= 0x55
	if err := os.WriteFile(dir+"/corrupt.xz", bad, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"two.zip":    "exactly one .img file, it holds 2 (base.img, other.img)",
		"none.zip":   "it holds 0 (readme.txt)",
		"trunc.xz":   "truncated",
		"trunc1.xz":  "truncated",
		"trunc.gz":   "truncated",
		"trunc.zst":  "truncated",
		"trunc.zip":  "truncated",
		"corrupt.xz": "corrupt",
	}
	for name, want := range cases {
		if strings.HasSuffix(name, ".xz") { // and with the Go decoder
			cases[name+"-go"] = want
		}
	}
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			if n, ok := strings.CutSuffix(name, "-go"); ok {
				name = n
				t.Setenv("PATH", t.TempDir())
			}
			cache := filepath.Join(t.TempDir(), "cache")
			_, err := PrepareBase(context.Background(), filepath.Join(dir, name), cache, PrepareOptions{})
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error %v, want one containing %q", err, want)
			}
			assertOnly(t, cache)
		})
	}
}

func sh(t testing.TB, script string) { t.Helper(); fixture.Run(t, "sh", "-c", script) }

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// assertOnly fails unless dir (if it exists) holds exactly the named files.
func assertOnly(t testing.TB, dir string, names ...string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var got []string
	for _, e := range ents {
		if e.Name() != ".imgbake.lock" { // the directory's lock stays
			got = append(got, e.Name())
		}
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %v, want %v", dir, got, names)
	}
}
