package tftp

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

// atftpGet fetches name with atftp (blksize 1024, tsize, as a Pi 4 asks)
// and returns how long it took.
func atftpGet(b *testing.B, host, port, name, out string) time.Duration {
	b.Helper()
	start := time.Now()
	cmd := exec.Command("atftp", "--option", "blksize 1024", "--option", "tsize 0", "-g", "-r", name, "-l", out, host, port)
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("atftp from %s:%s: %v\n%s", host, port, err, o)
	}
	return time.Since(start)
}

// BenchmarkVsDnsmasq fetches a 30 MiB file with atftp from this server and
// from dnsmasq's TFTP server in the same run and reports their throughput
// and the ratio (ours/dnsmasq; above 1 means faster).
//
//	go test ./netboot/tftp -run '^$' -bench VsDnsmasq -benchtime 3x
func BenchmarkVsDnsmasq(b *testing.B) {
	for _, tool := range []string{"atftp", "dnsmasq"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not installed: skipping the comparison", tool)
		}
	}
	if os.Geteuid() != 0 {
		b.Skip("needs root: dnsmasq's TFTP server only listens on port 69")
	}
	const size = 30 << 20
	dir := b.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "1234abcd"), 0o755)
	data := fixture.RandomBytes(size, 42)
	if err := os.WriteFile(filepath.Join(root, "1234abcd", "kernel8.img"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dm := exec.CommandContext(ctx, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--enable-tftp",
		"--tftp-root="+root, "--listen-address=127.0.0.3", "--bind-interfaces", "--user=root", "--pid-file="+filepath.Join(dir, "pid"))
	var dmLog bytes.Buffer
	dm.Stdout, dm.Stderr = &dmLog, &dmLog
	if err := dm.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cancel(); dm.Wait() }()
	time.Sleep(300 * time.Millisecond)
	files := testFiles{"1234abcd/kernel8.img": data}
	ts := startServer(b, files, 0)
	port := strings.TrimPrefix(ts.addr.String(), "127.0.0.1:")
	out := filepath.Join(dir, "out")
	var ours, theirs, bestOurs, bestTheirs time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate who goes first: the machine may be busy with other work.
		var o, d time.Duration
		if i%2 == 0 {
			o = atftpGet(b, "127.0.0.1", port, "1234abcd/kernel8.img", out)
			d = atftpGet(b, "127.0.0.3", "69", "1234abcd/kernel8.img", out)
		} else {
			d = atftpGet(b, "127.0.0.3", "69", "1234abcd/kernel8.img", out)
			o = atftpGet(b, "127.0.0.1", port, "1234abcd/kernel8.img", out)
		}
		ours, theirs = ours+o, theirs+d
		if bestOurs == 0 || o < bestOurs {
			bestOurs = o
		}
		if bestTheirs == 0 || d < bestTheirs {
			bestTheirs = d
		}
	}
	b.StopTimer()
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		b.Fatalf("a server sent different bytes; dnsmasq's log:\n%s", dmLog.String())
	}
	mibps := func(d time.Duration, n int) float64 { return float64(size) * float64(n) / d.Seconds() / (1 << 20) }
	b.ReportMetric(mibps(ours, b.N), "imgbake-MiB/s")
	b.ReportMetric(mibps(theirs, b.N), "dnsmasq-MiB/s")
	b.ReportMetric(theirs.Seconds()/ours.Seconds(), "ratio")
	b.ReportMetric(bestTheirs.Seconds()/bestOurs.Seconds(), "best-ratio")
	b.Logf("imgbake %.1f MiB/s (best %.1f), dnsmasq %.1f MiB/s (best %.1f)",
		mibps(ours, b.N), mibps(bestOurs, 1), mibps(theirs, b.N), mibps(bestTheirs, 1))
}
