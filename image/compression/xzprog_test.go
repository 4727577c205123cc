package compression

import (
	"bytes"
	"context"
	"os/exec"
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
)

// TestXZProgramCompressor: each chunk is one .xz stream that xz checks and
// decodes to the chunk, streams concatenate, the output is the same on every
// run, and XZ_OPT and XZ_DEFAULTS do not change it.
func TestXZProgramCompressor(t *testing.T) {
	fixture.RequireTools(t, "xz")
	compress := XZProgramCompressor()
	if compress == nil {
		t.Fatal("XZProgramCompressor is nil with xz installed")
	}
	data := testData()
	a, err := compress(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := compress(context.Background(), data[:1<<20])
	if err != nil {
		t.Fatal(err)
	}
	both := append(append([]byte{}, a...), b...)
	cmd := exec.Command("xz", "-t")
	cmd.Stdin = bytes.NewReader(both)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("xz -t: %v %s", err, out)
	}
	cmd = exec.Command("xz", "-dc")
	cmd.Stdin = bytes.NewReader(both)
	got, err := cmd.Output()
	if want := append(append([]byte{}, data...), data[:1<<20]...); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("xz -dc: %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
	if !Checked(XZ, a[:HeadSize]) {
		t.Error("the stream has no check")
	}
	// The options xz reads from the environment would change the output
	// (several blocks, the extreme preset); they are not passed on.
	t.Setenv("XZ_OPT", "--block-size=1MiB")
	t.Setenv("XZ_DEFAULTS", "-e")
	again, err := XZProgramCompressor()(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, a) {
		t.Errorf("output differs with XZ_OPT and XZ_DEFAULTS set: %d bytes, %d before", len(again), len(a))
	}
}

// TestXZProgramCompressorMissing: without xz on $PATH there is no program
// compressor (the caller falls back to the Go encoder).
func TestXZProgramCompressorMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if XZProgramCompressor() != nil {
		t.Fatal("XZProgramCompressor is not nil without xz on $PATH")
	}
}
