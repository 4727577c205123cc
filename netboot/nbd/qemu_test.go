package nbd

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgbake/imgbake/internal/fixture"
)

func qemuTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (apt-get install qemu-utils): skipping the real-client interop test", name)
	}
	return p
}

func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestQemuIO writes and reads back through qemu's NBD client.
func TestQemuIO(t *testing.T) {
	qemuIO := qemuTool(t, "qemu-io")
	const size = 8 << 20
	f := diskFile(t, make([]byte, size))
	ts := startServer(t, staticBackend{"node1": {Disk: f, Size: size, Client: localhost}})
	url := "nbd://" + ts.addr + "/node1"
	out := runTool(t, qemuIO, "-f", "raw", url,
		"-c", "write -P 0xab 0 1M", "-c", "write -P 0xcd 7M 1M", "-c", "flush",
		"-c", "read -P 0xab 0 1M", "-c", "read -P 0xcd 7M 1M", "-c", "discard 2M 1M", "-c", "read -P 0 2M 1M")
	if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "failed") {
		t.Fatalf("qemu-io:\n%s", out)
	}
	disk, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk[:1<<20], bytes.Repeat([]byte{0xab}, 1<<20)) || !bytes.Equal(disk[7<<20:], bytes.Repeat([]byte{0xcd}, 1<<20)) {
		t.Fatal("backing file does not hold what qemu-io wrote")
	}
	noWarnings(t, ts)
}

// TestQemuImgConvert copies the whole export out with qemu-img and back in.
func TestQemuImgConvert(t *testing.T) {
	qemuImg := qemuTool(t, "qemu-img")
	const size = 16 << 20
	want := fixture.RandomBytes(size, 7)
	f := diskFile(t, want)
	ts := startServer(t, staticBackend{"node1": {Disk: f, Size: size, Client: localhost}})
	url := "nbd://" + ts.addr + "/node1"
	out := filepath.Join(t.TempDir(), "out.img")
	runTool(t, qemuImg, "convert", "-f", "raw", "-O", "raw", url, out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("qemu-img convert from NBD: contents differ")
	}
	in := filepath.Join(t.TempDir(), "in.img")
	src := fixture.RandomBytes(size, 8)
	os.WriteFile(in, src, 0o600)
	runTool(t, qemuImg, "convert", "-n", "-f", "raw", "-O", "raw", in, url)
	got, _ = os.ReadFile(f.Name())
	if !bytes.Equal(got, src) {
		t.Fatal("qemu-img convert to NBD: backing file differs")
	}
	runTool(t, qemuImg, "info", url)
	noWarnings(t, ts)
}

// noWarnings fails if the server logged a warning for a well-behaved client.
func noWarnings(t *testing.T, ts *testServer) {
	t.Helper()
	time.Sleep(100 * time.Millisecond) // let the last disconnect be logged
	if log := ts.log.String(); strings.Contains(log, "level=WARN") {
		t.Errorf("server warned:\n%s", log)
	}
}
