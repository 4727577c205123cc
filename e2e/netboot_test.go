package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgbake/imgbake/image"
	"github.com/imgbake/imgbake/image/ext4"
	"github.com/imgbake/imgbake/netboot/node"
	"github.com/imgbake/imgbake/netboot/serve"
)

// The network-boot test's network: a tap device in a network namespace of
// its own, with dnsmasq as the LAN's DHCP server and imgbake's TFTP and NBD
// servers on the namespace side of the tap.
const (
	nbServer = "10.77.0.1"
	nbGuest  = "10.77.0.50"
	nbMAC    = "52:54:00:12:34:56"
	nbSerial = "1234abcd"
)

// TestNetboot boots a baked node (arm64) with no disk: QEMU gets the kernel,
// the initramfs and the command line that `imgbake netboot` serves over TFTP
// (fetched by the test, as the Pi's firmware would), its root comes over
// NBD. The first boot must reach the stand-in k3s while the server is
// restarted under it; a second boot must find the first boot's state.
func TestNetboot(t *testing.T) {
	for _, tool := range []string{"qemu-system-aarch64", "ip", "dnsmasq", "atftp", "dpkg-deb", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: the network boot test needs qemu-system-arm iproute2 dnsmasq atftp dpkg; run it with `make e2e`", tool)
		}
	}
	requireTools(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun: the network boot test needs tap devices")
	}
	e := newEnv(t)
	ctx := testContext(t)
	b, err := e.bake(ctx, t, "arm64")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	os.MkdirAll(out, 0o755)
	img := filepath.Join(out, "k5.img")
	if err := exec.Command("cp", "--sparse=always", filepath.Join(b.dir, "k5.img"), img).Run(); err != nil {
		t.Fatal(err)
	}
	addNBDModule(t, img)
	initProg := buildInit(ctx, t, e.repo)

	ns := setupNetns(t)
	startDnsmasq(t, ns, dir)
	store := &node.Store{StateDir: filepath.Join(dir, "state"), ImageDir: out, DiskSize: 2 << 30}
	mac, _ := net.ParseMAC(nbMAC)
	newServer := func() *serve.Server {
		return &serve.Server{
			Nodes: []serve.Node{{Name: "k5", Serial: nbSerial, MAC: mac}},
			Disks: store, Addr: netip.MustParseAddr(nbServer),
			Init: func(string) ([]byte, error) { return initProg, nil },
			Log:  testLogger(t),
		}
	}
	srv := startServer(t, ns, newServer())
	defer func() { srv.stop() }()
	defer e.slot(ctx, t)()

	// Boot 1, with a server restart while the node runs from its disk.
	spec := tftpBoot(ctx, t, ns, dir)
	if !strings.Contains(spec.Cmdline, "imgbake.nbd="+nbServer+":10809/k5") || strings.Contains(spec.Cmdline, "PARTUUID") {
		t.Fatalf("served command line %q", spec.Cmdline)
	}
	v := startNetbootVM(ctx, t, ns, "k5-netboot1", spec)
	waitConsole(ctx, t, v, "switching to /sbin/init", 5*time.Minute)
	srv.stop()
	t.Log("netboot server stopped under the running node")
	time.Sleep(3 * time.Second)
	srv = startServer(t, ns, newServer())
	bctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	if _, err := v.record(bctx, "ready"); err != nil {
		t.Fatalf("boot 1: %v", err)
	}
	rec := v.snapshot()
	checkNode(t, rec, spec, nodeExpect("k5"))
	checkFirstboot(t, rec, true)
	if n := countLines(t, v, "reconnected /dev/nbd0"); n == 0 {
		t.Log("boot 1: the disk I/O needed no reconnection while the server was down (no request in flight)")
	}
	disk := store.DiskPath("k5")
	powerOffClean(ctx, t, v, disk)

	// Boot 2 finds boot 1's state on the node's disk.
	spec = tftpBoot(ctx, t, ns, dir)
	v = startNetbootVM(ctx, t, ns, "k5-netboot2", spec)
	if _, err := v.record(bctx, "ready"); err != nil {
		t.Fatalf("boot 2: %v", err)
	}
	rec = v.snapshot()
	checkFirstboot(t, rec, false)
	if rec["marker_prev"] != "1" {
		t.Errorf("boot 2: the marker boot 1 wrote over NBD reads %q, want 1", rec["marker_prev"])
	}
	powerOffClean(ctx, t, v, disk)
}

// testLogger logs the servers' lines through t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// addNBDModule gives the image's kernel its nbd module, as a Raspberry Pi
// OS kernel package has it (the boot fixture carries only the modules a
// disk boot needs): nbd.ko.xz from the cached kernel package, listed in
// modules.dep.
func addNBDModule(t *testing.T, img string) {
	t.Helper()
	info, err := image.Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	var rp image.Partition
	for _, p := range info.Partitions {
		if p.Number == info.RootPartition {
			rp = p
		}
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	root, err := ext4.Open(f, rp.Start, rp.Size, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := root.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	ents, err := root.ReadDir("/usr/lib/modules")
	if err != nil || len(ents) != 1 {
		t.Fatalf("kernel modules of the image: %v %v", ents, err)
	}
	kver := ents[0].Name
	dir := "/usr/lib/modules/" + kver
	dep, err := root.ReadFile(dir + "/modules.dep")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(dep, []byte("/nbd.ko")) {
		return
	}
	debs, _ := filepath.Glob(filepath.Join(e2eCache(), "arm64", "kernel", "linux-image-*.deb"))
	if len(debs) == 0 {
		t.Fatalf("no cached kernel package in %s: run e2e/mkbase.sh fetch arm64", e2eCache())
	}
	rel := "kernel/drivers/block/nbd.ko.xz"
	cmd := exec.Command("sh", "-c", `dpkg-deb --fsys-tarfile "$1" | tar -xO --wildcards "*/modules/$2/$3"`, "sh", debs[0], kver, rel)
	ko, err := cmd.Output()
	if err != nil || len(ko) == 0 {
		t.Fatalf("extracting %s from %s: %v", rel, debs[0], err)
	}
	if err := root.MkdirAll(dir+"/kernel/drivers/block", ext4.Attr{Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	if err := root.WriteFile(dir+"/"+rel, ko, ext4.Attr{Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if err := root.WriteFile(dir+"/modules.dep", append(dep, []byte(rel+":\n")...), ext4.Attr{Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
}

func e2eCache() string {
	if c := os.Getenv("IMGBAKE_E2E_CACHE"); c != "" {
		return c
	}
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		return filepath.Join(x, "imgbake-e2e")
	}
	return filepath.Join(os.Getenv("HOME"), ".cache", "imgbake-e2e")
}

// buildInit builds netboot/initrd for arm64, as go generate does for the
// imgbake binary.
func buildInit(ctx context.Context, t *testing.T, repo string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "init")
	cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./netboot/initrd")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building netboot/initrd: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// setupNetns makes a network namespace with tap0 (the node's cable) at
// nbServer/24.
func setupNetns(t *testing.T) string {
	t.Helper()
	ns := "imgbake-e2e-" + strconv.Itoa(os.Getpid())
	sh(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	sh(t, "ip", "-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap")
	sh(t, "ip", "-n", ns, "addr", "add", nbServer+"/24", "dev", "tap0")
	sh(t, "ip", "-n", ns, "link", "set", "tap0", "up")
	return ns
}

// startDnsmasq runs the LAN's DHCP server (addresses only, no boot
// options: those come from imgbake) in the namespace.
func startDnsmasq(t *testing.T, ns, dir string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
		"--port=0", "--interface=tap0", "--bind-interfaces", "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,1h",
		"--dhcp-host="+nbMAC+","+nbGuest, "--dhcp-leasefile="+filepath.Join(dir, "leases"), "--pid-file="+filepath.Join(dir, "dnsmasq.pid"),
		"--dhcp-authoritative", "--log-dhcp", "--log-facility=-")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("dnsmasq:\n%s", log.String())
		}
	})
}

// inNetns runs fn with the calling thread in namespace ns: sockets fn
// opens stay in ns.
func inNetns(ns string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("entering %s: %w", ns, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("leaving %s: %w", ns, err) // the thread stays locked and dies with the goroutine
	}
	runtime.UnlockOSThread()
	return ferr
}

type runningServer struct {
	cancel context.CancelFunc
	done   chan error
}

func (r *runningServer) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
	}
}

func startServer(t *testing.T, ns string, s *serve.Server) *runningServer {
	t.Helper()
	var l serve.Listeners
	err := inNetns(ns, func() error {
		var err error
		if l.TFTP, err = net.ListenPacket("udp4", nbServer+":69"); err != nil {
			return err
		}
		l.NBD, err = net.Listen("tcp4", nbServer+":10809")
		return err
	})
	if err != nil {
		t.Fatalf("listening in %s: %v", ns, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningServer{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Serve(ctx, l) }()
	return r
}

// tftpBoot fetches what a Pi 4's firmware fetches: config.txt, then the
// kernel, initramfs and cmdline.txt it names, under the serial's prefix.
func tftpBoot(ctx context.Context, t *testing.T, ns, dir string) bootSpec {
	t.Helper()
	get := func(name string) string {
		out := filepath.Join(dir, "tftp-"+filepath.Base(name))
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "atftp", "--option", "blksize 1024", "--option", "tsize 0",
			"-g", "-r", nbSerial+"/"+name, "-l", out, nbServer, "69")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("TFTP %s: %v\n%s", name, err, b)
		}
		return out
	}
	cfg, err := os.ReadFile(get("config.txt"))
	if err != nil {
		t.Fatal(err)
	}
	spec, err := parseConfigTxt(cfg)
	if err != nil {
		t.Fatalf("served config.txt: %v\n%s", err, cfg)
	}
	cmdline, err := os.ReadFile(get(spec.Cmdline))
	if err != nil {
		t.Fatal(err)
	}
	spec.Kernel, spec.Initramfs = get(spec.Kernel), get(spec.Initramfs)
	spec.Cmdline = strings.TrimSpace(string(cmdline))
	return spec
}

// startNetbootVM is startVM for a diskless node: its network card is tap0
// of the namespace.
func startNetbootVM(ctx context.Context, t *testing.T, ns, name string, spec bootSpec) *vm {
	t.Helper()
	q := qemuFor("arm64")
	sockDir, err := os.MkdirTemp("", "imgbake-qmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	v := &vm{t: t, name: name, monitor: filepath.Join(sockDir, "mon"),
		logPath: filepath.Join(t.TempDir(), name+".serial.log"), exited: make(chan struct{}), records: map[string]string{}}
	args := append([]string{"netns", "exec", ns, q.Binary}, q.Args...)
	args = append(args, "-m", "1024", "-smp", "1", "-display", "none", "-no-reboot",
		"-serial", "stdio", "-monitor", "unix:"+v.monitor+",server=on,wait=off",
		"-kernel", spec.Kernel, "-initrd", spec.Initramfs, "-append", spec.Cmdline+" console=ttyAMA0",
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-device,netdev=n0,mac="+nbMAC)
	v.cmd = exec.Command("ip", args...)
	stdout, err := v.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	v.cmd.Stderr = v.cmd.Stdout
	logf, err := os.Create(v.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("starting QEMU: %v", err)
	}
	t.Logf("%s: network boot (serial log %s)", name, v.logPath)
	go func() {
		v.scan(io.TeeReader(stdout, logf))
		v.waitErr = v.cmd.Wait()
		logf.Close()
		close(v.exited)
	}()
	go func() {
		select {
		case <-ctx.Done():
			v.kill()
		case <-v.exited:
		}
	}()
	t.Cleanup(func() {
		v.kill()
		<-v.exited
		if t.Failed() {
			t.Logf("%s: last console lines:\n%s", name, v.lastLines())
		}
	})
	return v
}

// waitConsole waits for a console line containing s.
func waitConsole(ctx context.Context, t *testing.T, v *vm, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if countLines(t, v, s) > 0 {
			return
		}
		select {
		case <-v.exited:
			t.Fatalf("%s: QEMU exited (%v) before %q", v.name, v.waitErr, s)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	t.Fatalf("%s: no %q on the console after %s", v.name, s, d)
}
