package image

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgbake/imgbake/internal/fixture"
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

// TestZstdStopsMidChunk: a zstd chunk compressor cancelled after it has
// started stops with context.Canceled before the chunk's end, as xz's
// does, so that Ctrl-C is not held up by a whole chunk on a slow machine.
func TestZstdStopsMidChunk(t *testing.T) {
	p := words(zstdChunk, 1)
	for _, c := range []struct {
		name     string
		compress chunkCompressor
	}{{"zst", zstdCompressor()}, {"xz", xzCompress}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := &checksThenCancel{Context: context.Background()}
			ctx.after.Store(2)
			out, err := c.compress(ctx, p)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("compressor cancelled after it started: %d bytes, %v; want context.Canceled", len(out), err)
			}
			// Not uncancelled: the compressor still makes the whole frame,
			// which zstd/xz decode to the chunk.
			full, err := c.compress(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			tool := map[string]string{"zst": "zstd", "xz": "xz"}[c.name]
			if _, err := exec.LookPath(tool); err != nil {
				return
			}
			cmd := exec.Command(tool, "-dc")
			cmd.Stdin = bytes.NewReader(append(full, full...)) // frames concatenate
			got, err := cmd.Output()
			if err != nil || !bytes.Equal(got, append(p, p...)) {
				t.Errorf("%s -dc of two frames: %d bytes, %v; want %d bytes", tool, len(got), err, 2*len(p))
			}
		})
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
