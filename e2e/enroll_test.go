package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/imgbake/imgbake/netboot/dhcp"
)

// The second Pi of TestNetbootEnroll, which asks but does not boot.
const (
	enSerial2 = "5678ef01"
	enMAC2    = "dc:a6:32:00:00:02"
	enAddr2   = "10.77.0.51"
)

// TestNetbootEnroll: Pis that are not in the cluster file network-boot
// through imgbake's own proxy DHCP, TFTP and NBD and are enrolled by the
// cluster's enroll: policy. In mode auto the first boots (QEMU, arm64) as
// edge-1 with its image built on demand, reaches the stand-in k3s with that
// name and the profile's labels, and after a restart of the server boots
// again as the same node with its state. Then the policy is switched to
// approve (picked up by the running server): a second Pi is not answered
// and is listed by `netboot pending` until `netboot approve` enrols it,
// after which it gets its boot files. Cost: two QEMU boots, like
// TestNetboot.
func TestNetbootEnroll(t *testing.T) {
	nbRequire(t)
	e := newEnv(t)
	ctx := testContext(t)
	bin := buildNetbootImgbake(ctx, t, e.repo)
	dir := t.TempDir()
	myBase, standin := e.netbootBase(ctx, t, dir)
	// The stand-in k3s as the cached release the server builds with (it
	// has no network to download one).
	k3sDir := filepath.Join(dir, "cache", "k3s", k3sVersion, "arm64")
	os.MkdirAll(k3sDir, 0o755)
	nbRun(t, "cp", standin, filepath.Join(k3sDir, "k3s-arm64"))
	b, _ := os.ReadFile(standin)
	sum := sha256.Sum256(b)
	os.WriteFile(filepath.Join(k3sDir, "sha256sum-arm64.txt"), []byte(hex.EncodeToString(sum[:])+"  k3s-arm64\n"), 0o644)

	cmd := exec.CommandContext(ctx, bin, "init", "--server", serverAddr, "--base", myBase)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("imgbake init: %v\n%s", err, out)
	}
	os.MkdirAll(filepath.Join(dir, "profiles"), 0o755)
	os.WriteFile(filepath.Join(dir, "profiles", "edge.yaml"), []byte("role: agent\nnode-role: edge\nlabels: {e2e.imgbake.dev/pool: enrolled}\n"), 0o644)
	cfg := filepath.Join(dir, "imgbake.yaml")
	cluster := func(mode string) {
		src := "server: " + serverAddr + "\nk3s: {version: " + k3sVersion + "}\nbase: base.img\ncache-dir: cache\n" +
			"nodes:\n  - {name: k1, profile: server}\nenroll: {mode: " + mode + ", profile: edge, name: \"edge-{n}\", models: [pi4, pi5]}\n"
		if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cluster("auto")

	lan, fw := nbSetupNetns(t)
	enStartRouter(t, lan, dir)
	state := filepath.Join(dir, "state")
	// The servers log to netboot.log beside the cluster file.
	serverLog := filepath.Join(dir, "netboot.log")
	started := 0 // servers started so far, each logs "netboot: serving"
	serving := func(log []byte) bool { return bytes.Count(log, []byte("netboot: serving")) > started }
	args := []string{"--config", cfg, "--interface", "br0", "--state-dir", state, "--disk-size", "2G"}
	srv := startNetbootCLIReady(ctx, t, lan, bin, serving, args...)
	defer func() { srv.stop(t) }()
	defer e.slot(ctx, t)()

	// Boot 1: the unknown Pi is enrolled, its image built, and it boots.
	pi := piFirmware{serial: nbSerial, mac: nbMAC, addr: nbGuest, dhcp: true}
	t0 := time.Now()
	spec, ok := piBoot(ctx, t, lan, fw, dir, pi)
	if !ok {
		t.Fatal("the unknown Pi got no DHCP boot answer in mode auto")
	}
	t.Logf("enrolment, on-demand build and boot files took %s", elapsedSince(t0))
	if !strings.Contains(spec.Cmdline, "imgbake.nbd="+nbServer+":10809/edge-1") {
		t.Fatalf("served command line %q", spec.Cmdline)
	}
	enrolled, _ := os.ReadFile(filepath.Join(dir, "imgbake.enrolled.yaml"))
	if !bytes.Contains(enrolled, []byte("name: edge-1")) || !bytes.Contains(enrolled, []byte("serial: "+nbSerial)) || !bytes.Contains(enrolled, []byte(nbMAC)) {
		t.Errorf("imgbake.enrolled.yaml:\n%s", enrolled)
	}
	disk := filepath.Join(state, "edge-1", "disk.img")
	x := expect{Role: "agent", Hostname: "edge-1", Config: []string{
		"node-name: edge-1", "server: https://" + serverAddr + ":6443", "- e2e.imgbake.dev/pool=enrolled", "- imgbake.io/role=edge",
	}}
	v, rec, spec := netbootReady(ctx, t, lan, "edge-1-boot1", spec)
	checkNode(t, rec, spec, x)
	checkFirstboot(t, rec, true)
	status := runImgbake(ctx, t, bin, "netboot", "status", "--config", cfg, "--state-dir", state)
	if !strings.Contains(status, "edge-1") || !strings.Contains(status, "attached") || !strings.Contains(status, nbGuest) {
		t.Errorf("netboot status while edge-1 runs:\n%s", status)
	}
	powerOffClean(ctx, t, v, disk)

	// Boot 2, after a restart of the server: the same node, with its state.
	srv.stop(t)
	started++
	srv = startNetbootCLIReady(ctx, t, lan, bin, serving, args...)
	spec, ok = piBoot(ctx, t, lan, fw, dir, pi)
	if !ok || !strings.Contains(spec.Cmdline, "/edge-1 ") {
		t.Fatalf("boot 2: answered %v, command line %q", ok, spec.Cmdline)
	}
	v, rec, _ = netbootReady(ctx, t, lan, "edge-1-boot2", spec)
	checkFirstboot(t, rec, false)
	if rec["marker_prev"] != "1" || rec["hostname"] != "edge-1" {
		t.Errorf("boot 2: marker %q, hostname %q; want boot 1's state on edge-1's disk", rec["marker_prev"], rec["hostname"])
	}
	powerOffClean(ctx, t, v, disk)

	// mode: approve, picked up by the running server: a second unknown Pi
	// waits, unanswered, until it is approved.
	reloads := countLog(serverLog, "reloaded the cluster file")
	cluster("approve")
	waitLog(ctx, t, serverLog, "reloaded the cluster file", reloads+1)
	pi2 := piFirmware{serial: enSerial2, mac: enMAC2, addr: enAddr2, dhcp: true}
	if _, ok := piBoot(ctx, t, lan, fw, dir, pi2); ok {
		t.Fatal("a Pi waiting for approval got a boot answer")
	}
	pending := runImgbake(ctx, t, bin, "netboot", "pending", "--config", cfg, "--state-dir", state)
	if !strings.Contains(pending, enSerial2) || !strings.Contains(pending, enMAC2) || !strings.Contains(pending, "pi4") || !strings.Contains(pending, "approve "+enSerial2) {
		t.Fatalf("netboot pending:\n%s", pending)
	}
	reloads = countLog(serverLog, "reloaded the cluster file")
	out := runImgbake(ctx, t, bin, "netboot", "approve", enSerial2, "--name", "k7", "--config", cfg, "--state-dir", state)
	if !strings.Contains(out, "k7: enrolled") {
		t.Fatalf("approve: %s", out)
	}
	waitLog(ctx, t, serverLog, "reloaded the cluster file", reloads+1)
	spec, ok = piBoot(ctx, t, lan, fw, dir, pi2)
	if !ok || !strings.Contains(spec.Cmdline, "imgbake.nbd="+nbServer+":10809/k7 ") {
		t.Fatalf("after approval: answered %v, command line %q", ok, spec.Cmdline)
	}
	if pending := runImgbake(ctx, t, bin, "netboot", "pending", "--config", cfg, "--state-dir", state); strings.Contains(pending, enSerial2) {
		t.Errorf("k7 still pending after approval:\n%s", pending)
	}
}

func runImgbake(ctx context.Context, t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("imgbake %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func countLog(path, s string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte(s))
}

// waitLog waits until the server log holds n lines containing s.
func waitLog(ctx context.Context, t *testing.T, path, s string, n int) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(200 * time.Millisecond) {
		if b, _ := os.ReadFile(path); bytes.Count(b, []byte(s)) >= n {
			return
		}
	}
	t.Fatalf("the server did not log %q %d times", s, n)
}

// enStartRouter runs the LAN's DHCP server, dnsmasq (addresses only), in a
// namespace of its own plugged into the LAN's bridge: imgbake's proxy DHCP
// listens on port 67 in the LAN namespace, as on a server node whose
// router hands out the addresses.
func enStartRouter(t *testing.T, lan, dir string) {
	t.Helper()
	ns := lan + "-router"
	nbRun(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	nbRun(t, "ip", "link", "add", "r0", "netns", ns, "type", "veth", "peer", "name", "rport", "netns", lan)
	nbRun(t, "ip", "-n", lan, "link", "set", "rport", "master", "br0", "up")
	nbRun(t, "ip", "-n", ns, "addr", "add", "10.77.0.2/24", "dev", "r0")
	nbRun(t, "ip", "-n", ns, "link", "set", "r0", "up")
	nbStartDnsmasq(t, ns, "r0", dir, enMAC2+","+enAddr2)
}

// piDHCP runs TestPiDHCPHelper in the firmware namespace: the Pi's DHCP
// DISCOVER; it reports whether a network boot answer came.
func piDHCP(ctx context.Context, t *testing.T, firmware string, pi piFirmware) bool {
	t.Helper()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", firmware, os.Args[0], "-test.run=^TestPiDHCPHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "IMGBAKE_E2E_PI_DHCP="+pi.mac+","+pi.serial)
	out, err := cmd.CombinedOutput()
	t.Logf("Pi DHCP (%s): %s", pi.serial, bytes.TrimSpace(out))
	return err == nil && bytes.Contains(out, []byte("BOOT ANSWER"))
}

// TestPiDHCPHelper is not a test: piDHCP runs it in a network namespace
// to send what a Pi 4 bootloader sends, a DISCOVER with option 60
// PXEClient and option 97 (FourCC RPi4, board revision c03111 (Pi 4B
// 4 GB), the MAC's low 4 bytes, the serial), and wait for an answer
// carrying the Raspberry Pi boot menu (option 43).
func TestPiDHCPHelper(t *testing.T) {
	env := os.Getenv("IMGBAKE_E2E_PI_DHCP")
	if env == "" {
		return
	}
	macText, serialText, _ := strings.Cut(env, ",")
	mac, err := net.ParseMAC(macText)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := hex.DecodeString(serialText)
	if err != nil || len(serial) != 4 {
		t.Fatalf("serial %q", serialText)
	}
	o97 := []byte{0, 'R', 'P', 'i', '4'}
	o97 = binary.BigEndian.AppendUint32(o97, 0xc03111)
	o97 = append(append(o97, mac[2:6]...), serial...)
	conn, err := dhcp.Listen(context.Background(), "fw0", ":68")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	disc, err := dhcpv4.NewDiscovery(mac,
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(dhcp.PiVendorClass)),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientSystemArchitectureType, []byte{0, 0})),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, o97)))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	for try := 0; try < 3; try++ { // the bootloader resends every few seconds
		if _, err := conn.WriteTo(disc.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67}); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				break
			}
			r, err := dhcpv4.FromBytes(buf[:n])
			if err != nil || r.TransactionID != disc.TransactionID || r.OpCode != dhcpv4.OpcodeBootReply {
				continue
			}
			if o43 := r.GetOneOption(dhcpv4.OptionVendorSpecificInformation); bytes.Contains(o43, []byte("Raspberry Pi Boot")) {
				t.Logf("BOOT ANSWER %s from %s", r.MessageType(), r.ServerIdentifier())
				return
			}
			t.Logf("address offer from %s (the router)", r.ServerIdentifier())
		}
	}
	t.Fatal("no network boot answer")
}

// netbootReady boots spec's diskless node and waits for the stand-in k3s,
// like startNetbootVM and vm.ready, with the kernel's messages on the
// console (loglevel=7: /init's DHCP errors show when a boot fails).
func netbootReady(ctx context.Context, t *testing.T, ns, name string, spec bootSpec) (*vm, map[string]string, bootSpec) {
	t.Helper()
	spec.Cmdline += " loglevel=7"
	v := startNetbootVM(ctx, t, ns, name, spec)
	return v, v.ready(ctx, t), spec
}
