package progress

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// fakeClock advances by step on every call.
type fakeClock struct {
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time { c.t = c.t.Add(c.step); return c.t }

func TestBarDrawsBytesRateAndTimeLeft(t *testing.T) {
	var out bytes.Buffer
	clk := &fakeClock{t: time.Unix(0, 0), step: time.Second}
	b := newBar(&out, "decompressing", 10<<20, clk.now)
	b.Add(1 << 20)
	got := out.String()
	for _, want := range []string{"\rdecompressing: ", "10.0%", "1.0 MiB/10.0 MiB", "1.0 MiB/s", "9s left"} {
		if !strings.Contains(got, want) {
			t.Errorf("bar %q lacks %q", got, want)
		}
	}
	b.Add(9 << 20)
	b.Done()
	if !strings.HasSuffix(out.String(), "\n") || !strings.Contains(out.String(), "100.0%") {
		t.Errorf("final bar %q: want 100%% and a newline", out.String())
	}
	n := len(out.String())
	b.Add(5)
	b.Done()
	if len(out.String()) != n {
		t.Errorf("bar drew after Done: %q", out.String()[n:])
	}
}

func TestBarRedrawsAtMostTenTimesASecond(t *testing.T) {
	var out bytes.Buffer
	clk := &fakeClock{t: time.Unix(0, 0), step: time.Millisecond}
	b := newBar(&out, "x", 0, clk.now)
	for range 1000 { // one simulated second
		b.Add(1)
	}
	if n := strings.Count(out.String(), "\r"); n < 5 || n > 11 {
		t.Errorf("drew %d times in one second, want about 10", n)
	}
	if strings.Contains(out.String(), "left") {
		t.Errorf("unknown total must not show time left: %q", out.String())
	}
}

func TestSilentWhenNotTerminal(t *testing.T) {
	var out bytes.Buffer
	b := New(&out, "x", 100)
	b.Add(50)
	b.Done()
	if out.Len() != 0 {
		t.Errorf("wrote %q to a non-terminal", out.String())
	}
	f, err := os.CreateTemp(t.TempDir(), "p")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) {
		t.Error("a regular file is not a terminal")
	}
	if IsTerminal(nil) || IsTerminal(&out) {
		t.Error("nil and a buffer are not terminals")
	}
	var nb *Bar
	nb.Add(1) // must not panic
	nb.Done()
}

func TestReaderWriterCount(t *testing.T) {
	b := newBar(nil, "x", 0, time.Now)
	data := strings.Repeat("a", 12345)
	var sink bytes.Buffer
	if _, err := io.Copy(NewWriter(&sink, b), NewReader(strings.NewReader(data), b)); err != nil {
		t.Fatal(err)
	}
	if b.done != 2*12345 {
		t.Errorf("counted %d bytes, want %d", b.done, 2*12345)
	}
	if sink.String() != data {
		t.Error("data changed in transit")
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 29: "1.5 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
