package e2e

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgbake/imgbake/image/ext4"
)

// The network-boot test's network: a bridge in a network namespace of its
// own, with the node's tap device on it, dnsmasq as the LAN's DHCP server
// and imgbake's TFTP and NBD servers on the bridge's address.
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
	nbRequire(t)
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
	bin := buildNetbootImgbake(ctx, t, e.repo)

	ns, fw := nbSetupNetns(t)
	nbStartDnsmasq(t, ns, "br0", dir)
	cfg := filepath.Join(dir, "imgbake.yaml")
	cluster := "server: " + serverAddr + "\nk3s: {version: v1.31.4+k3s1}\nnodes:\n" +
		"  - name: k5\n    profile: worker\n    netboot: {serial: " + nbSerial + ", mac: \"" + nbMAC + "\"}\n"
	if err := os.WriteFile(cfg, []byte(cluster), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	args := []string{"--config", cfg, "--interface", "br0", "--no-dhcp", "--out", out, "--state-dir", state, "--disk-size", "2G"}
	srv := startNetbootCLI(ctx, t, ns, bin, args...)
	defer func() { srv.stop(t) }()
	disk := filepath.Join(state, "k5", "disk.img")
	defer e.slot(ctx, t)()

	// Boot 1, with a server restart while the node runs from its disk.
	spec := tftpBoot(ctx, t, ns, fw, dir)
	if !strings.Contains(spec.Cmdline, "imgbake.nbd="+nbServer+":10809/k5") || strings.Contains(spec.Cmdline, "PARTUUID") {
		t.Fatalf("served command line %q", spec.Cmdline)
	}
	spec.Cmdline += " loglevel=7" // test only: show /init's progress on the console
	v := startNetbootVM(ctx, t, ns, "k5-netboot1", spec)
	nbWaitConsole(ctx, t, v, "switching to /sbin/init", 5*time.Minute)
	srv.stop(t)
	t.Log("imgbake netboot stopped under the running node")
	time.Sleep(3 * time.Second)
	srv = startNetbootCLI(ctx, t, ns, bin, args...)
	rec := v.ready(ctx, t)
	checkNode(t, rec, spec, nodeExpect("k5"))
	checkFirstboot(t, rec, true)
	// Stopping the server closed the node's connection: it must have
	// reconnected to the new one.
	if n := countLines(t, v, "reconnected /dev/nbd0"); n == 0 {
		t.Error("boot 1: /init's NBD helper never reported reconnecting after the server restart")
	}
	powerOffClean(ctx, t, v, disk)

	// Boot 2 finds boot 1's state on the node's disk.
	spec = tftpBoot(ctx, t, ns, fw, dir)
	v = startNetbootVM(ctx, t, ns, "k5-netboot2", spec)
	rec = v.ready(ctx, t)
	checkFirstboot(t, rec, false)
	if rec["marker_prev"] != "1" {
		t.Errorf("boot 2: the marker boot 1 wrote over NBD reads %q, want 1", rec["marker_prev"])
	}
	powerOffClean(ctx, t, v, disk)
}

// nbRequire skips a network boot test that cannot run here.
func nbRequire(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"qemu-system-aarch64", "ip", "dnsmasq", "atftp", "dpkg-deb", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: the network boot test needs qemu-system-arm iproute2 dnsmasq atftp dpkg; run it with `make e2e`", tool)
		}
	}
	requireTools(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun: the network boot test needs tap devices")
	}
}

// addNBDModule gives the image's kernel its nbd module, as a Raspberry Pi
// OS kernel package has it (the boot fixture carries only the modules a
// disk boot needs): nbd.ko.xz from the cached kernel package, listed in
// modules.dep.
func addNBDModule(t *testing.T, img string) {
	t.Helper()
	withRoot(t, img, func(root *ext4.FS) {
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
		debs, _ := filepath.Glob(filepath.Join(nbE2ECache(), "arm64", "kernel", "linux-image-*.deb"))
		if len(debs) == 0 {
			t.Fatalf("no cached kernel package in %s: run e2e/mkbase.sh fetch arm64", nbE2ECache())
		}
		list, err := exec.Command("sh", "-c", `dpkg-deb --fsys-tarfile "$1" | tar -t`, "sh", debs[0]).Output()
		if err != nil {
			t.Fatalf("listing %s: %v", debs[0], err)
		}
		var member string
		for _, l := range strings.Split(string(list), "\n") {
			if strings.Contains(l, "/modules/"+kver+"/kernel/drivers/block/nbd.ko") {
				member = l
			}
		}
		if member == "" {
			t.Fatalf("no nbd module for %s in %s", kver, debs[0])
		}
		rel := member[strings.Index(member, "kernel/drivers/block/"):]
		ko, err := exec.Command("sh", "-c", `dpkg-deb --fsys-tarfile "$1" | tar -xO "$2"`, "sh", debs[0], member).Output()
		if err != nil || len(ko) == 0 {
			t.Fatalf("extracting %s from %s: %v", member, debs[0], err)
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
	})
}

func nbE2ECache() string {
	if c := os.Getenv("IMGBAKE_E2E_CACHE"); c != "" {
		return c
	}
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		return filepath.Join(x, "imgbake-e2e")
	}
	return filepath.Join(os.Getenv("HOME"), ".cache", "imgbake-e2e")
}

// buildNetbootImgbake builds imgbake as `make build` does: go generate
// builds the netboot /init programs it embeds (netboot/initramfs/bin,
// not committed), then the binary.
func buildNetbootImgbake(ctx context.Context, t *testing.T, repo string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "imgbake")
	for _, args := range [][]string{{"generate", "./netboot/initramfs"}, {"build", "-o", out, "./cmd/imgbake"}} {
		cmd := exec.CommandContext(ctx, goTool(), args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
	return out
}

// cliServer is `imgbake netboot` running in the LAN namespace.
type cliServer struct {
	cmd  *exec.Cmd
	done chan error
}

func startNetbootCLI(ctx context.Context, t *testing.T, ns, bin string, args ...string) *cliServer {
	t.Helper()
	return startNetbootCLIReady(ctx, t, ns, bin, func(log []byte) bool {
		return bytes.Contains(log, []byte("netboot: serving")) && (bytes.Contains(log, []byte("disk ready")) || bytes.Count(log, []byte("netboot: serving")) > 1)
	}, args...)
}

// startNetbootCLIReady is startNetbootCLI with the log lines that say the
// server is ready. The servers a test starts with one cluster file
// (args[1]) log to netboot.log beside it, shown when the test fails.
func startNetbootCLIReady(ctx context.Context, t *testing.T, ns, bin string, ready func(log []byte) bool, args ...string) *cliServer {
	t.Helper()
	logPath := filepath.Join(filepath.Dir(args[1]), "netboot.log")
	if _, err := os.Stat(logPath); err != nil { // the first server of the test
		t.Cleanup(func() {
			if t.Failed() {
				b, _ := os.ReadFile(logPath)
				t.Logf("imgbake netboot:\n%s", b)
			}
		})
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	s := &cliServer{cmd: exec.Command("ip", append([]string{"netns", "exec", ns, bin, "netboot"}, args...)...), done: make(chan error, 1)}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait(); logf.Close() }()
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		b, _ := os.ReadFile(logPath)
		if ready(b) {
			return s
		}
		select {
		case err := <-s.done:
			t.Fatalf("imgbake netboot exited: %v\n%s", err, b)
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("imgbake netboot did not get ready:\n%s", b)
		}
	}
}

// stop ends the server as Ctrl-C would and checks it exits cleanly.
func (s *cliServer) stop(t *testing.T) {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("imgbake netboot on SIGTERM: %v", err)
		}
	case <-time.After(time.Minute):
		s.cmd.Process.Kill()
		<-s.done
		t.Error("imgbake netboot did not stop within a minute of SIGTERM")
	}
	s.cmd = nil
}

func nbRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// setupNetns makes the cluster's LAN: a network namespace with a bridge
// br0 at nbServer/24 (the server's side) and tap0 (the node's cable) in it.
// A second namespace stands in for the node's firmware when it fetches the
// boot files (see tftpBoot).
func nbSetupNetns(t *testing.T) (lan, firmware string) {
	t.Helper()
	id := strconv.Itoa(os.Getpid())
	lan, firmware = "imgbake-e2e-"+id, "imgbake-e2e-fw-"+id
	for _, ns := range []string{lan, firmware} {
		nbRun(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		nbRun(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	nbRun(t, "ip", "-n", lan, "link", "add", "br0", "type", "bridge")
	nbRun(t, "ip", "-n", lan, "addr", "add", nbServer+"/24", "dev", "br0")
	nbRun(t, "ip", "-n", lan, "link", "set", "br0", "up")
	nbRun(t, "ip", "-n", lan, "tuntap", "add", "dev", "tap0", "mode", "tap")
	nbRun(t, "ip", "-n", lan, "link", "set", "tap0", "master", "br0", "up")
	return lan, firmware
}

// startDnsmasq runs the LAN's DHCP server (addresses only, no boot
// options: those come from imgbake) in the namespace.
func nbStartDnsmasq(t *testing.T, ns, iface, dir string, hosts ...string) {
	t.Helper()
	args := []string{"netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
		"--port=0", "--interface=" + iface, "--bind-interfaces", "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,1h",
		"--dhcp-host=" + nbMAC + "," + nbGuest, "--dhcp-leasefile=" + filepath.Join(dir, "leases"), "--pid-file=" + filepath.Join(dir, "dnsmasq.pid"),
		"--dhcp-authoritative", "--log-dhcp", "--log-facility=-"}
	for _, h := range hosts {
		args = append(args, "--dhcp-host="+h)
	}
	cmd := exec.Command("ip", args...)
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

// tftpBoot fetches what a Pi 4's firmware fetches: config.txt, then the
// kernel, initramfs and cmdline.txt it names, under the serial's prefix.
// The firmware fetches from the address its DHCP lease gave the node, and
// that is the address the server then serves the node's disk to; so the
// fetch runs in the firmware namespace, plugged into the LAN for the time
// of the fetch with the node's MAC and address.
func tftpBoot(ctx context.Context, t *testing.T, lan, firmware, dir string) bootSpec {
	t.Helper()
	spec, _ := piBoot(ctx, t, lan, firmware, dir, piFirmware{serial: nbSerial, mac: nbMAC, addr: nbGuest})
	return spec
}

// piFirmware is a Pi's identity on the boot network, for piBoot.
type piFirmware struct {
	serial, mac, addr string
	// dhcp makes the firmware ask for the boot answer first, as a Pi 4
	// does (DHCP DISCOVER with option 97; see TestPiDHCPHelper); with no
	// answer, piBoot fetches nothing and reports false.
	dhcp bool
	// server is the TFTP server's address (default nbServer).
	server string
	// firstFiles fetches only config.txt and cmdline.txt, not the kernel
	// and initramfs; a failed fetch then reports false instead of failing
	// the test.
	firstFiles bool
	// then, if set, runs in the firmware namespace's network setup after
	// the files came, before the Pi's cable is pulled.
	then func()
}

// piBoot is tftpBoot for any Pi: its DHCP request when pi.dhcp, then the
// boot files under its serial's prefix.
func piBoot(ctx context.Context, t *testing.T, lan, firmware, dir string, pi piFirmware) (bootSpec, bool) {
	t.Helper()
	nbRun(t, "ip", "link", "add", "fw0", "netns", firmware, "address", pi.mac, "type", "veth", "peer", "name", "fwport", "netns", lan)
	defer func() {
		exec.Command("ip", "-n", firmware, "link", "del", "fw0").Run()
		exec.Command("ip", "-n", lan, "neigh", "flush", "all").Run()
	}()
	nbRun(t, "ip", "-n", lan, "link", "set", "fwport", "master", "br0", "up")
	nbRun(t, "ip", "-n", firmware, "addr", "add", pi.addr+"/24", "dev", "fw0")
	nbRun(t, "ip", "-n", firmware, "link", "set", "fw0", "up")
	if pi.dhcp && !piDHCP(ctx, t, firmware, pi) {
		return bootSpec{}, false
	}
	server := cmp.Or(pi.server, nbServer)
	fetch := func(name string) (string, error) {
		out := filepath.Join(dir, "tftp-"+filepath.Base(name))
		var b []byte
		var err error
		for try := 0; try < 10; try++ { // the bridge port needs a moment
			cmd := exec.CommandContext(ctx, "ip", "netns", "exec", firmware, "atftp", "--option", "blksize 1024", "--option", "tsize 0",
				"-g", "-r", pi.serial+"/"+name, "-l", out, server, "69")
			if b, err = cmd.CombinedOutput(); err == nil {
				return out, nil
			}
			time.Sleep(time.Second)
		}
		return "", fmt.Errorf("TFTP %s: %v\n%s", name, err, b)
	}
	get := func(name string) string {
		out, err := fetch(name)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if pi.firstFiles {
		get = func(name string) string { out, _ := fetch(name); return out }
	}
	cfgPath := get("config.txt")
	if cfgPath == "" {
		return bootSpec{}, false
	}
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := parseConfigTxt(cfg)
	if err != nil {
		t.Fatalf("served config.txt: %v\n%s", err, cfg)
	}
	cmdlinePath := get(spec.Cmdline)
	if cmdlinePath == "" {
		return bootSpec{}, false
	}
	cmdline, err := os.ReadFile(cmdlinePath)
	if err != nil {
		t.Fatal(err)
	}
	if !pi.firstFiles {
		spec.Kernel, spec.Initramfs = get(spec.Kernel), get(spec.Initramfs)
	}
	spec.Cmdline = strings.TrimSpace(string(cmdline))
	if pi.then != nil {
		pi.then()
	}
	return spec, true
}

// startNetbootVM is startVM for a diskless node: its network card is tap0
// of the namespace.
func startNetbootVM(ctx context.Context, t *testing.T, ns, name string, spec bootSpec) *vm {
	t.Helper()
	q := qemuFor("arm64")
	v := newVM(t, name)
	args := append([]string{"netns", "exec", ns, q.Binary}, q.Args...)
	args = append(args, "-m", "1024", "-smp", "1", "-display", "none", "-no-reboot",
		"-serial", "stdio", "-monitor", "unix:"+v.monitor+",server=on,wait=off",
		"-kernel", spec.Kernel, "-initrd", spec.Initramfs, "-append", spec.Cmdline+" console=ttyAMA0",
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-device,netdev=n0,mac="+nbMAC)
	v.cmd = exec.Command("ip", args...)
	v.run(ctx, t, "network boot")
	return v
}

// waitConsole waits for a console line containing s.
func nbWaitConsole(ctx context.Context, t *testing.T, v *vm, s string, d time.Duration) {
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
