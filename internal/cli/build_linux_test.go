//go:build linux

package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgbake/imgbake/internal/progress"
)

// openPTY returns a pseudo-terminal's two ends: what is written to tty is
// read from master.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("no pseudo-terminal: unlocking: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// TestBuildNodesProgressLines: nodes built at once on a terminal each get
// a progress line fed by the build's own bars, finished with done or
// FAILED, and the nodes' lines are printed below them, in order.
func TestBuildNodesProgressLines(t *testing.T) {
	master, tty := openPTY(t)
	var screen bytes.Buffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			screen.Write(buf[:n])
			if err != nil || bytes.Contains(screen.Bytes(), []byte("END")) {
				return
			}
		}
	}()
	var o bytes.Buffer
	a := &App{Stdout: &o, Stderr: tty}
	names := []string{"n1", "n2", "n3"}
	err := a.buildNodes(context.Background(), names, "out", 2, func(i int, prog, out, errOut io.Writer) error {
		if _, ok := prog.(*progress.Line); !ok {
			return fmt.Errorf("progress writer %T, want a line", prog)
		}
		bar := progress.New(prog, "copying base image", 100<<20)
		bar.Add(40 << 20)
		time.Sleep(150 * time.Millisecond) // past the redraw interval
		bar.Add(10 << 20)
		bar.Done()
		fmt.Fprintf(out, "%s: built\n", names[i])
		if i == 2 {
			return errors.New("building n3: disk full")
		}
		return nil
	})
	if err == nil || err.Error() != "building n3: disk full" {
		t.Errorf("error %v", err)
	}
	fmt.Fprint(tty, "END")
	<-read
	s := screen.String()
	// What a redraw catches depends on timing: some bar's bytes, and each
	// line's end.
	if !regexp.MustCompile(`\rn[123]: copying base image: +[0-9.]+% [0-9.]+ MiB/100.0 MiB`).MatchString(s) {
		t.Errorf("terminal shows no bar's bytes:\n%q", s)
	}
	if !strings.HasSuffix(s, "\x1b[3A\rn1: done\x1b[K\r\n\rn2: done\x1b[K\r\n\rn3: FAILED\x1b[K\r\nEND") {
		t.Errorf("final lines:\n%q", s)
	}
	if o.String() != "n1: built\nn2: built\nn3: built\n" {
		t.Errorf("stdout %q", o.String())
	}
}
