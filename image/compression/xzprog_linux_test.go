package compression

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/imgbake/imgbake/internal/fixture"
)

// xzChildren returns the pids of this process's children named xz.
func xzChildren(t *testing.T) []int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the process has ended
		}
		// pid (comm) state ppid ...
		open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || end < open {
			continue
		}
		f := bytes.Fields(b[end+1:])
		if string(b[open+1:end]) != "xz" || len(f) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(string(f[1])); ppid == os.Getpid() {
			pid, _ := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestXZProgramCompressorCancelled cancels the context while xz is
// compressing a chunk: the compressor returns context.Canceled within a
// second, and the xz process is gone (killed and waited for).
func TestXZProgramCompressorCancelled(t *testing.T) {
	fixture.RequireTools(t, "xz")
	if n := len(xzChildren(t)); n != 0 {
		t.Fatalf("%d xz children before the test", n)
	}
	data := fixture.CompressibleData(32 << 20) // seconds of work for xz -6
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		out []byte
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		out, err := XZProgramCompressor()(ctx, data)
		done <- result{out, err, time.Now()}
	}()
	var cancelled time.Time
	for cancelled.IsZero() {
		select {
		case r := <-done:
			t.Fatalf("the compressor returned before xz was seen running: %d bytes, %v", len(r.out), r.err)
		case <-time.After(5 * time.Millisecond):
		}
		if len(xzChildren(t)) > 0 {
			time.Sleep(100 * time.Millisecond) // xz is mid-chunk
			cancelled = time.Now()
			cancel()
		}
	}
	r := <-done
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled compressor: %d bytes, %v; want context.Canceled", len(r.out), r.err)
	}
	took := r.at.Sub(cancelled)
	t.Logf("returned %v after the cancel", took)
	if took > time.Second {
		t.Errorf("the compressor returned %v after the cancel", took)
	}
	if pids := xzChildren(t); len(pids) != 0 {
		t.Errorf("xz still running after the compressor returned: pids %v", pids)
	}
}
