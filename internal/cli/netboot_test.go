package cli

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imgbake/imgbake/internal/fixture"
	"github.com/imgbake/imgbake/internal/testlog"
)

// netbootCluster writes a cluster file with a network-booted k5, a k6
// without netboot: and k5's image in out/.
func netbootCluster(t *testing.T) (dir, cfg string) {
	t.Helper()
	dir = t.TempDir()
	cfg = filepath.Join(dir, "imgbake.yaml")
	src := `server: 192.168.1.10
k3s: {version: v1.31.4+k3s1}
nodes:
  - name: k5
    profile: worker
    netboot: {serial: 1234ABCD, mac: "dc:a6:32:01:36:c2"}
  - name: k6
    profile: worker
`
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "out"), 0o755)
	if err := os.Rename(fixture.Build(t, fixture.RaspiOSBookwormArm64), filepath.Join(dir, "out", "k5.img")); err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

func TestNetbootReset(t *testing.T) {
	fixture.RequireTools(t)
	dir, cfg := netbootCluster(t)
	disk := filepath.Join(dir, "netboot-state", "k5", "disk.img")
	code, out, errOut := run(t, nil, "netboot", "reset", "k5", "--config", cfg, "--disk-size", "1G")
	if code != 0 {
		t.Fatalf("reset: exit %d: %s", code, errOut)
	}
	if fi, err := os.Stat(disk); err != nil || fi.Size() != 1<<30 {
		t.Fatalf("disk: %v %v", fi, err)
	}
	if !strings.Contains(out, "k5: new disk "+disk+" (1.0 GiB) from k5.img") {
		t.Errorf("stdout %q", out)
	}
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"netboot", "reset", "k6"}, 1, "k6 has no netboot: entry"},
		{[]string{"netboot", "reset", "k7"}, 1, "no node k7"},
		{[]string{"netboot", "reset"}, 2, "name the node(s)"},
		{[]string{"netboot", "reset", "k5", "--disk-size", "12x"}, 2, "--disk-size"},
		{[]string{"netboot", "reset", "k5", "--disk-size", "100M"}, 2, "too small"},
		{[]string{"netboot"}, 2, "--interface eth0"},
		{[]string{"netboot", "--interface", "no-such-if0"}, 2, "ip -br addr"},
		{[]string{"netboot", "--interface", "lo", "--address", "10.9.9.9"}, 2, "not an address of lo"},
	} {
		code, _, e := run(t, nil, append(c.args, "--config", cfg)...)
		if code != c.code || !strings.Contains(e, c.msg) {
			t.Errorf("%v: exit %d %q; want %d and %q", c.args, code, e, c.code, c.msg)
		}
	}
	os.Remove(filepath.Join(dir, "out", "k5.img"))
	if code, _, e := run(t, nil, "netboot", "reset", "k5", "--config", cfg); code != 1 || !strings.Contains(e, "imgbake build k5") {
		t.Errorf("reset without an image: exit %d %q", code, e)
	}
	// The old disk survives a failed reset.
	if _, err := os.Stat(disk); err != nil {
		t.Errorf("failed reset removed the disk: %v", err)
	}
	// A cluster file without netboot nodes.
	os.WriteFile(cfg, []byte("server: 192.168.1.10\nk3s: {version: v1.31.4+k3s1}\nnodes:\n  - name: k6\n    profile: worker\n"), 0o644)
	if code, _, e := run(t, nil, "netboot", "reset", "k6", "--config", cfg); code != 1 || !strings.Contains(e, "netboot: {serial: 1234abcd}") {
		t.Errorf("no netboot nodes: exit %d %q", code, e)
	}
}

func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestNetbootServes runs `imgbake netboot` on the loopback interface
// (without DHCP) and fetches a node's boot file with atftp.
func TestNetbootServes(t *testing.T) {
	fixture.RequireTools(t)
	if _, err := exec.LookPath("atftp"); err != nil {
		t.Skip("atftp not installed (apt-get install atftp)")
	}
	dir, cfg := netbootCluster(t)
	// The init programs, built here: the test must not depend on `go
	// generate` having run.
	initDir := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(initDir, "init-arm64"), "../../netboot/initrd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building netboot/initrd: %v\n%s", err, out)
	}
	initProg, _ := os.ReadFile(filepath.Join(initDir, "init-arm64"))
	tftpPort, nbdPort := freePort(t, "udp"), freePort(t, "tcp")
	ctx, cancel := context.WithCancel(context.Background())
	var stderr testlog.Buffer
	env := map[string]string{"IMGBAKE_NETBOOT_INIT_DIR": initDir}
	app := &App{Stdout: &stderr, Stderr: &stderr, Env: func(k string) string { return env[k] }}
	done := make(chan int)
	go func() {
		done <- app.Execute(ctx, []string{"netboot", "--config", cfg, "--interface", "lo", "--no-dhcp",
			"--disk-size", "1G", "--tftp-port", strconv.Itoa(tftpPort), "--nbd-port", strconv.Itoa(nbdPort)})
	}()
	out := filepath.Join(t.TempDir(), "cmdline.txt")
	var got []byte
	code := -1
loop:
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		select {
		case code = <-done:
			break loop
		default:
		}
		cmd := exec.Command("atftp", "-g", "-r", "1234abcd/cmdline.txt", "-l", out, "127.0.0.1", strconv.Itoa(tftpPort))
		if cmd.Run() == nil {
			got, _ = os.ReadFile(out)
			break
		}
	}
	// The initramfs (config.txt has auto_initramfs=1; the fixture has no
	// initramfs8 of its own) is the addition with our init.
	initrd := filepath.Join(t.TempDir(), "initramfs8")
	if code == -1 {
		if err := exec.Command("atftp", "-g", "-r", "1234abcd/initramfs8", "-l", initrd, "127.0.0.1", strconv.Itoa(tftpPort)).Run(); err != nil {
			t.Errorf("fetching initramfs8: %v", err)
		} else if b, _ := os.ReadFile(initrd); !bytes.HasPrefix(b, []byte("070701")) || !bytes.Contains(b, initProg) {
			t.Errorf("initramfs8 (%d bytes) does not hold the init program", len(b))
		}
	}
	cancel()
	if code == -1 {
		code = <-done
	}
	if code != 0 {
		t.Errorf("netboot exit %d:\n%s", code, stderr.String())
	}
	want := "root=/dev/nbd0p2 imgbake.nbd=127.0.0.1:" + strconv.Itoa(nbdPort) + "/k5 ip=dhcp rootwait\n"
	if !strings.HasSuffix(string(got), want) {
		t.Errorf("cmdline.txt = %q, want it to end with %q\nlog:\n%s", got, want, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "netboot-state", "k5", "disk.img")); err != nil {
		t.Errorf("no disk made: %v", err)
	}
	if !strings.Contains(stderr.String(), "netboot: serving") {
		t.Errorf("log lacks the start line:\n%s", stderr.String())
	}
}
