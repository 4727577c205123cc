package nbd

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgbake/imgbake/internal/fixture"
)

// startNBDServer runs Debian's nbd-server exporting disk as "node1" on a
// free loopback port and returns its nbd:// URL.
func startNBDServer(b *testing.B, disk string) string {
	b.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := b.TempDir()
	conf := filepath.Join(dir, "config")
	pid := filepath.Join(dir, "pid")
	os.WriteFile(conf, []byte(fmt.Sprintf(`[generic]
	user = root
	group = root
	listenaddr = 127.0.0.1
	port = %d
[node1]
	exportname = %s
	flush = true
	fua = true
	trim = true
`, port, disk)), 0o644)
	if out, err := exec.Command("nbd-server", "-C", conf, "-p", pid).CombinedOutput(); err != nil {
		b.Fatalf("nbd-server: %v\n%s", err, out)
	}
	b.Cleanup(func() {
		if p, err := os.ReadFile(pid); err == nil {
			var n int
			fmt.Sscan(string(p), &n)
			if n > 0 {
				syscall.Kill(n, syscall.SIGTERM)
			}
		}
	})
	url := fmt.Sprintf("nbd://127.0.0.1:%d/node1", port)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return url
		}
	}
	b.Fatal("nbd-server did not start listening")
	return ""
}

func timed(b *testing.B, name string, args ...string) time.Duration {
	b.Helper()
	start := time.Now()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return time.Since(start)
}

// BenchmarkVsNBDServer copies a 128 MiB export out of (read) and into
// (write) this server and Debian's nbd-server with qemu-img convert, in the
// same run, and reports throughputs and ratios (ours/nbd-server time
// inverted; above 1 means faster).
//
//	go test ./netboot/nbd -run '^$' -bench VsNBDServer -benchtime 3x
func BenchmarkVsNBDServer(b *testing.B) {
	for _, tool := range []string{"qemu-img", "nbd-server"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not installed: skipping the comparison", tool)
		}
	}
	const size = 128 << 20
	dir := b.TempDir()
	src := filepath.Join(dir, "src.img")
	data := fixture.RandomBytes(size, 9)
	os.WriteFile(src, data, 0o600)
	oursDisk := filepath.Join(dir, "ours.img")
	theirsDisk := filepath.Join(dir, "theirs.img")
	os.WriteFile(oursDisk, data, 0o600)
	os.WriteFile(theirsDisk, data, 0o600)
	f, err := os.OpenFile(oursDisk, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	ts := startServer2(b, staticBackend{"node1": {Disk: f, Size: size, Client: localhost}})
	ours := "nbd://" + ts + "/node1"
	theirs := startNBDServer(b, theirsDisk)
	out := filepath.Join(dir, "out.img")
	var oursR, theirsR, oursW, theirsW time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		oursR += timed(b, "qemu-img", "convert", "-f", "raw", "-O", "raw", ours, out)
		theirsR += timed(b, "qemu-img", "convert", "-f", "raw", "-O", "raw", theirs, out)
		oursW += timed(b, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, ours)
		theirsW += timed(b, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, theirs)
	}
	b.StopTimer()
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		b.Fatal("copied data differs")
	}
	mibps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / (1 << 20) }
	b.ReportMetric(mibps(oursR), "imgbake-read-MiB/s")
	b.ReportMetric(mibps(theirsR), "nbdserver-read-MiB/s")
	b.ReportMetric(mibps(oursW), "imgbake-write-MiB/s")
	b.ReportMetric(mibps(theirsW), "nbdserver-write-MiB/s")
	b.ReportMetric(theirsR.Seconds()/oursR.Seconds(), "read-ratio")
	b.ReportMetric(theirsW.Seconds()/oursW.Seconds(), "write-ratio")
}
