package progress

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Lines draws several progress lines, one per task running in parallel
// (such as cards being flashed), redrawn together in place on a terminal
// and silent elsewhere. It is safe for concurrent use.
type Lines struct {
	w   io.Writer // nil when silent
	now func() time.Time

	mu    sync.Mutex
	lines []*Line
	drawn int // lines on screen
	last  time.Time
}

// Line is one task's line of a Lines.
type Line struct {
	l            *Lines
	label, phase string
	total, done  int64
	start        time.Time
	status       string // final text; set by Finish
}

// NewLines returns a group of lines drawn on w when it is a terminal.
func NewLines(w io.Writer) *Lines {
	if w == nil || !IsTerminal(w) {
		w = nil
	}
	return &Lines{w: w, now: time.Now}
}

// Add adds a line for a task labelled label (such as "k5 /dev/sdb").
func (l *Lines) Add(label string) *Line {
	l.mu.Lock()
	defer l.mu.Unlock()
	ln := &Line{l: l, label: label, start: l.now()}
	l.lines = append(l.lines, ln)
	return ln
}

// Phase starts a new phase of the task ("writing", "verifying") that
// counts up to total bytes.
func (ln *Line) Phase(phase string, total int64) {
	l := ln.l
	l.mu.Lock()
	defer l.mu.Unlock()
	ln.phase, ln.total, ln.done, ln.start = phase, total, 0, l.now()
	l.redraw(false)
}

// Bar starts a phase named label of total bytes on the line and returns a
// bar that counts on it, for code that reports through bars: such code
// given the line as its progress writer (New(line, ...)) shows on the
// line.
func (ln *Line) Bar(label string, total int64) *Bar {
	ln.Phase(label, total)
	now := ln.l.now
	return &Bar{label: label, total: total, now: now, start: now(), on: ln}
}

// Write drops p: a Line is an io.Writer only so that it can be passed as a
// progress writer, to New, which draws bars on it (Line.Bar).
func (ln *Line) Write(p []byte) (int, error) { return len(p), nil }

// Add records n more bytes done in the current phase.
func (ln *Line) Add(n int64) {
	l := ln.l
	l.mu.Lock()
	defer l.mu.Unlock()
	ln.done += n
	l.redraw(false)
}

// Finish replaces the line's progress by status ("done", "FAILED: ...").
func (ln *Line) Finish(status string) {
	l := ln.l
	l.mu.Lock()
	defer l.mu.Unlock()
	ln.status = status
	l.redraw(true)
}

// Done draws the lines a last time; later changes are not drawn.
func (l *Lines) Done() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.redraw(true)
	l.w = nil
}

// redraw draws every line when forced or when the last draw is old
// enough; l.mu is held.
func (l *Lines) redraw(force bool) {
	if l.w == nil {
		return
	}
	t := l.now()
	if !force && !l.last.IsZero() && t.Sub(l.last) < redrawEvery {
		return
	}
	l.last = t
	var s string
	if l.drawn > 0 {
		s = fmt.Sprintf("\x1b[%dA", l.drawn) // back to the first line
	}
	for _, ln := range l.lines {
		s += "\r" + ln.text(t) + "\x1b[K\n"
	}
	l.drawn = len(l.lines)
	// A failed write to the terminal is not worth failing the operation.
	_, _ = io.WriteString(l.w, s)
}

// text is the line at time t: the label, then the final status or the
// phase's bytes, rate and time left.
func (ln *Line) text(t time.Time) string {
	if ln.status != "" {
		return ln.label + ": " + ln.status
	}
	if ln.phase == "" {
		return ln.label + ": waiting"
	}
	b := &Bar{label: ln.label + ": " + ln.phase, total: ln.total, done: ln.done, start: ln.start}
	return b.line(t, false)
}
