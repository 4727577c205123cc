package progress

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

// TestLinesRedrawInPlace: each task has its own line (label, phase, bytes,
// rate, time left); a redraw moves back up over the block and rewrites
// every line; finished tasks show their status.
func TestLinesRedrawInPlace(t *testing.T) {
	var out bytes.Buffer
	clk := &fakeClock{t: time.Unix(0, 0), step: time.Second}
	l := &Lines{w: &out, now: clk.now}
	a, b := l.Add("k5 /dev/sdb"), l.Add("k6 /dev/sdc")
	a.Phase("writing", 10<<20)
	b.Phase("writing", 20<<20)
	a.Add(2 << 20)
	got := out.String()
	last := got[strings.LastIndex(got, "\x1b[2A"):]
	for _, want := range []string{"\rk5 /dev/sdb: writing:  20.0% 2.0 MiB/10.0 MiB", "left\x1b[K\n", "\rk6 /dev/sdc: writing:   0.0%"} {
		if !strings.Contains(last, want) {
			t.Errorf("redraw %q lacks %q", last, want)
		}
	}
	a.Finish("done")
	b.Finish("FAILED")
	l.Done()
	n := out.Len()
	got = out.String()
	if !strings.HasSuffix(got, "\x1b[2A\rk5 /dev/sdb: done\x1b[K\n\rk6 /dev/sdc: FAILED\x1b[K\n") {
		t.Errorf("final lines: %q", got[max(0, len(got)-120):])
	}
	b.Add(1)
	if out.Len() != n {
		t.Error("drew after Done")
	}
	if NewLines(&bytes.Buffer{}).w != nil {
		t.Error("lines on a non-terminal are not silent")
	}
}

// TestLineAsProgressWriter: a Line passed where a progress writer goes
// shows each bar made on it as its phase, with the bar's bytes.
func TestLineAsProgressWriter(t *testing.T) {
	var out bytes.Buffer
	clk := &fakeClock{t: time.Unix(0, 0), step: time.Second}
	l := &Lines{w: &out, now: clk.now}
	ln := l.Add("k5")
	var w io.Writer = ln
	bar := New(w, "copying base image", 10<<20)
	bar.Add(5 << 20)
	got := out.String()
	if last := got[strings.LastIndex(got, "\r"):]; !strings.Contains(last, "k5: copying base image:  50.0% 5.0 MiB/10.0 MiB") {
		t.Errorf("line %q", last)
	}
	bar.Done()
	New(w, "checksumming", 1<<20).Add(1 << 20)
	got = out.String()
	if last := got[strings.LastIndex(got, "\r"):]; !strings.Contains(last, "k5: checksumming: 100.0%") {
		t.Errorf("next phase %q", last)
	}
}
