// Package progress draws a one-line progress bar (bytes done, rate, time
// left) on a terminal. On anything that is not a terminal it prints nothing,
// so callers can pass os.Stderr unconditionally.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// redrawEvery bounds how often the bar is redrawn (about 10 times a second).
const redrawEvery = 100 * time.Millisecond

// Bar is a progress bar for one operation. A nil *Bar is valid and does
// nothing, as is a Bar whose writer is not a terminal. Bar is safe for
// concurrent use.
type Bar struct {
	w     io.Writer // nil when silent
	label string
	total int64
	now   func() time.Time

	mu    sync.Mutex
	done  int64
	start time.Time
	drawn time.Time
	width int // length of the last line drawn, to blank leftovers
	ended bool
	on    *Line // shows this bar instead of w (Line.Bar)
}

// New returns a bar labelled label that counts up to total bytes (0 means
// unknown). It draws on w only when w is a terminal; nil or any other
// writer makes a silent bar.
func New(w io.Writer, label string, total int64) *Bar {
	if ln, ok := w.(*Line); ok {
		return ln.Bar(label, total)
	}
	if w == nil || !IsTerminal(w) {
		w = nil
	}
	return newBar(w, label, total, time.Now)
}

// newBar is New without the terminal check, for tests.
func newBar(w io.Writer, label string, total int64, now func() time.Time) *Bar {
	return &Bar{w: w, label: label, total: total, now: now, start: now()}
}

// IsTerminal reports whether w is an *os.File connected to a terminal
// (character device).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || f == nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	return fi.Mode()&os.ModeCharDevice != 0
}

// Add records n more bytes done and redraws if the last redraw is old enough.
func (b *Bar) Add(n int64) {
	if b == nil {
		return
	}
	if b.on != nil {
		b.on.Add(n)
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done += n
	if b.w == nil || b.ended {
		return
	}
	t := b.now()
	if !b.drawn.IsZero() && t.Sub(b.drawn) < redrawEvery {
		return
	}
	b.drawn = t
	b.draw(t, false)
}

// Done draws the final state and ends the line. Further Adds are counted
// but not drawn.
func (b *Bar) Done() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ended {
		return
	}
	b.ended = true
	if b.w != nil {
		b.draw(b.now(), true)
	}
}

// draw writes the bar; b.mu is held.
func (b *Bar) draw(t time.Time, final bool) {
	line := b.line(t, final)
	pad := ""
	if n := b.width - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	b.width = len(line)
	end := ""
	if final {
		end = "\n"
	}
	// A failed write to the terminal is not worth failing the operation.
	_, _ = fmt.Fprintf(b.w, "\r%s%s%s", line, pad, end)
}

// line formats the bar text at time t.
func (b *Bar) line(t time.Time, final bool) string {
	el := t.Sub(b.start)
	var rate float64
	if el > 0 {
		rate = float64(b.done) / el.Seconds()
	}
	var sb strings.Builder
	sb.WriteString(b.label)
	sb.WriteString(": ")
	if b.total > 0 {
		pct := float64(b.done) * 100 / float64(b.total)
		if pct > 100 {
			pct = 100
		}
		fmt.Fprintf(&sb, "%5.1f%% %s/%s", pct, Bytes(b.done), Bytes(b.total))
	} else {
		sb.WriteString(Bytes(b.done))
	}
	fmt.Fprintf(&sb, " %s/s", Bytes(int64(rate)))
	switch {
	case final:
		fmt.Fprintf(&sb, " in %s", el.Round(100*time.Millisecond))
	case b.total > 0 && rate > 0 && b.done < b.total:
		left := time.Duration(float64(b.total-b.done) / rate * float64(time.Second))
		fmt.Fprintf(&sb, " %s left", left.Round(time.Second))
	}
	return sb.String()
}

// Bytes formats n bytes with a binary unit: "512 B", "1.5 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// NewReader returns a reader that adds every byte read from r to b.
func NewReader(r io.Reader, b *Bar) io.Reader { return &reader{r: r, b: b} }

type reader struct {
	r io.Reader
	b *Bar
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.b.Add(int64(n))
	return n, err
}

// NewWriter returns a writer that adds every byte written to w to b.
func NewWriter(w io.Writer, b *Bar) io.Writer { return &writer{w: w, b: b} }

type writer struct {
	w io.Writer
	b *Bar
}

func (w *writer) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.b.Add(int64(n))
	return n, err
}
