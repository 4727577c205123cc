package image

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgbake/imgbake/image/compression"
	"github.com/imgbake/imgbake/internal/fixture"
	"github.com/imgbake/imgbake/internal/progress"
)

// words returns n bytes of pseudo-random text: data zstd and xz work on
// (neither all zeros nor incompressible), the same for a given seed.
func words(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	vocab := strings.Fields("k3s node agent server cluster image flash boot kernel token label taint pod containerd etcd raspberry pi arm64 armhf systemd")
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(vocab[r.IntN(len(vocab))])
		b.WriteByte(" \n"[r.IntN(2)])
	}
	return b.Bytes()[:n]
}

// checksThenCancel is a context that reports cancellation from its
// (after+1)th Err call on: a compressor given it is cancelled once it
// has started, at a point that does not depend on timing.
type checksThenCancel struct {
	context.Context
	after, calls atomic.Int64
}

func (c *checksThenCancel) Err() error {
	if c.calls.Add(1) > c.after.Load() {
		return context.Canceled
	}
	return nil
}

// TestChunkCompressorsStopMidChunk: a chunk compressor cancelled after it
// has started stops with context.Canceled before the chunk's end, so that
// Ctrl-C is not held up by a whole chunk on a slow machine; uncancelled,
// each makes a frame or stream that concatenates with others.
func TestChunkCompressorsStopMidChunk(t *testing.T) {
	p := words(zstdChunk, 1)
	type compressor struct {
		name, tool string
		compress   chunkCompressor
	}
	cases := []compressor{{"zst", "zstd", zstdCompressor()}, {"xz", "xz", xzCompress}}
	if c := compression.XZProgramCompressor(); c != nil {
		cases = append(cases, compressor{"xz-program", "xz", c})
	} else {
		t.Log("xz not installed: the xz program's compressor is not tested")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out []byte
			var err error
			if c.name == "xz-program" {
				// xz is stopped through ctx.Done (it is killed), not by
				// checks of ctx.Err: cancel it once it has started.
				ctx, cancel := context.WithCancel(context.Background())
				at := make(chan time.Time, 1)
				time.AfterFunc(100*time.Millisecond, func() { at <- time.Now(); cancel() })
				out, err = c.compress(ctx, p)
				if err != nil {
					if took := time.Since(<-at); took > time.Second {
						t.Errorf("returned %v after the cancel", took)
					}
				}
			} else {
				ctx := &checksThenCancel{Context: context.Background()}
				ctx.after.Store(2)
				out, err = c.compress(ctx, p)
			}
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("compressor cancelled after it started: %d bytes, %v; want context.Canceled", len(out), err)
			}
			// Not uncancelled: the compressor still makes the whole frame,
			// which zstd/xz decode to the chunk.
			full, err := c.compress(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := exec.LookPath(c.tool); err != nil {
				return
			}
			cmd := exec.Command(c.tool, "-dc")
			cmd.Stdin = bytes.NewReader(append(full, full...)) // frames concatenate
			got, err := cmd.Output()
			if err != nil || !bytes.Equal(got, append(p, p...)) {
				t.Errorf("%s -dc of two frames: %d bytes, %v; want %d bytes", c.tool, len(got), err, 2*len(p))
			}
		})
	}
}

// sparseImage writes an image of four xz chunks and a partial one: data
// amid zeros, a hole, written zeros, data across the last two chunks.
func sparseImage(t *testing.T) (*os.File, []byte) {
	size := 4*xzChunk + 5<<20
	img := make([]byte, size)
	copy(img[1<<20:], words(1<<20, 3))
	copy(img[4*xzChunk-1<<20:], words(2<<20, 4))
	f, err := os.Create(filepath.Join(t.TempDir(), "k5.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	for _, r := range [][2]int{{0, xzChunk}, {2 * xzChunk, len(img)}} { // chunk 1 stays a hole
		if _, err := f.WriteAt(img[r[0]:r[1]], int64(r[0])); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	return f, img
}

// TestCompressXZ compresses an image with holes with the xz program and,
// with no xz on $PATH, with the Go encoder: xz checks each file and
// decodes it to the image's bytes.
func TestCompressXZ(t *testing.T) {
	fixture.RequireTools(t, "xz")
	xzProg, _ := exec.LookPath("xz")
	f, img := sparseImage(t)
	for _, enc := range []string{"program", "go"} {
		t.Run(enc, func(t *testing.T) {
			if enc == "go" {
				t.Setenv("PATH", t.TempDir())
			}
			out, err := os.Create(filepath.Join(t.TempDir(), "k5.img.xz"))
			if err != nil {
				t.Fatal(err)
			}
			sum, err := compressImage(context.Background(), f, int64(len(img)), "xz", out, nil)
			if err != nil {
				t.Fatal(err)
			}
			xzd := mustRead(t, out.Name())
			if sum != sha(xzd) {
				t.Errorf("compressImage returned sha256 %s, the file's is %s", sum, sha(xzd))
			}
			if b, err := exec.Command(xzProg, "-t", out.Name()).CombinedOutput(); err != nil {
				t.Fatalf("xz -t: %v %s", err, b)
			}
			got, err := exec.Command(xzProg, "-dc", out.Name()).Output()
			if err != nil || !bytes.Equal(got, img) {
				t.Fatalf("xz -dc: %d bytes, %v; want the image's %d bytes", len(got), err, len(img))
			}
			// Where xz is not installed, imgbake reads the file in Go:
			// stream by stream, and block by block on every CPU.
			rc, err := compression.NewReader(compression.XZ, bytes.NewReader(xzd))
			if err != nil {
				t.Fatal(err)
			}
			if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, img) {
				t.Errorf("Go decoder: %d bytes, %v; want the image's %d bytes", len(got), err, len(img))
			}
			dec, err := os.Create(filepath.Join(t.TempDir(), "k5.img"))
			if err != nil {
				t.Fatal(err)
			}
			defer dec.Close()
			_, err = compression.DecodeXZBlocks(context.Background(), bytes.NewReader(xzd), int64(len(xzd)), dec,
				func(total int64) (*progress.Bar, error) { return nil, dec.Truncate(total) })
			if got := mustRead(t, dec.Name()); err != nil || !bytes.Equal(got, img) {
				t.Errorf("parallel Go decoder: %d bytes, %v; want the image's %d bytes", len(got), err, len(img))
			}
			t.Logf("%d bytes", len(xzd))
		})
	}
}

// TestXZCompressorChoice: the xz program compresses when it is installed,
// the Go encoder when it is not (the two make different bytes).
func TestXZCompressorChoice(t *testing.T) {
	fixture.RequireTools(t, "xz")
	p := words(1<<20, 5)
	prog, err := compression.XZProgramCompressor()(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	goEnc, err := xzCompress(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(prog, goEnc) {
		t.Fatal("the xz program and the Go encoder made the same bytes: the test cannot tell them apart")
	}
	if got, err := xzCompressor()(context.Background(), p); err != nil || !bytes.Equal(got, prog) {
		t.Errorf("with xz installed: %d bytes, %v; want the xz program's %d bytes", len(got), err, len(prog))
	}
	t.Setenv("PATH", t.TempDir())
	if got, err := xzCompressor()(context.Background(), p); err != nil || !bytes.Equal(got, goEnc) {
		t.Errorf("without xz: %d bytes, %v; want the Go encoder's %d bytes", len(got), err, len(goEnc))
	}
}

// TestBuildZstdInterruptedMidStream cancels a --compress zst build once the
// compressed file has data (mid-stream, chunks in flight): the build
// returns context.Canceled within a second and leaves no file behind.
func TestBuildZstdInterruptedMidStream(t *testing.T) {
	base := prepared(t, fixture.RaspiOSBookwormArm64, false)
	p := testPlan(t, 1)
	for _, e := range p.Entries {
		if e.Path == "/usr/local/bin/k3s" {
			if err := os.WriteFile(e.Source, words(96<<20, 2), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cancelled := make(chan time.Time, 1)
	hook := func(name string) {
		if name != "compress" {
			return
		}
		go func() {
			for {
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					if fi, err := e.Info(); err == nil && strings.Contains(e.Name(), ".zst") && fi.Size() > 0 {
						cancelled <- time.Now()
						cancel()
						return
					}
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	_, err := Build(context.WithValue(ctx, phaseKey{}, hook), BuildOptions{Base: base, Output: filepath.Join(dir, "k5.img"), Plan: p, Compress: "zst", Epoch: time.Unix(1, 0)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Build: %v, want context.Canceled", err)
	}
	// Generous for a loaded machine: the chunks in flight stop at their
	// next 1 MiB step, not at their end.
	took := time.Since(<-cancelled)
	t.Logf("returned %v after the cancel", took)
	if took > time.Second {
		t.Errorf("Build returned %v after the cancel", took)
	}
	assertOnly(t, dir)
}

// TestCompressChunksOnePerCPU: no more chunks are compressed at once than
// there are CPUs to run them (GOMAXPROCS), although one more is held in
// memory: the xz program's processes are not held back by GOMAXPROCS.
func TestCompressChunksOnePerCPU(t *testing.T) {
	const chunk, n = 4096, 32
	f, err := os.Create(filepath.Join(t.TempDir(), "k5.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(words(chunk*n, 6)); err != nil {
		t.Fatal(err)
	}
	var running, most atomic.Int64
	compress := func(ctx context.Context, p []byte) ([]byte, error) {
		r := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); r > m && !most.CompareAndSwap(m, r); m = most.Load() {
		}
		time.Sleep(5 * time.Millisecond)
		return p[:1], nil
	}
	var out bytes.Buffer
	if err := compressChunks(context.Background(), f, chunk*n, chunk, compress, &out, nil); err != nil {
		t.Fatal(err)
	}
	if out.Len() != n {
		t.Fatalf("%d bytes written, want %d", out.Len(), n)
	}
	if cpus := int64(runtime.GOMAXPROCS(0)); most.Load() > cpus {
		t.Errorf("%d chunks compressed at once, GOMAXPROCS is %d", most.Load(), cpus)
	}
}
