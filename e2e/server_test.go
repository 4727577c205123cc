package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgbake/imgbake/image"
	"github.com/imgbake/imgbake/image/ext4"
	"github.com/imgbake/imgbake/netboot/nbd"
)

// The self-hosted server's address on the test LAN, and its card's MAC.
const (
	shServer = "10.77.0.10"
	shMAC    = "52:54:00:00:00:10"
)

// TestNetbootServer: `imgbake build k1` for a node with netboot-server:
// makes an image that runs the cluster's network boot server itself. The
// image (arm64) boots under QEMU on the test LAN with its static address;
// its imgbake-netboot.service is active, builds the image of the network
// node k5 there (from the base and the k3s release it carries: the VM has
// no other network), and a Pi 4 on the LAN (the test, in a namespace) gets
// the DHCP boot answer, k5's config.txt and cmdline.txt over TFTP and
// k5's disk over NBD from it. imgbake finds its arm64 self as a user's
// would: bin/imgbake-linux-arm64 beside bin/imgbake, checked to be the same
// build. Cost: one QEMU boot, and one image build in the emulated node.
func TestNetbootServer(t *testing.T) {
	nbRequire(t)
	e := newEnv(t)
	ctx := testContext(t)
	bin := buildImgbakePair(ctx, t, e.repo)
	dir := t.TempDir()
	// The base, with systemd-networkd enabled (the fixture has no other
	// network stack).
	myBase, standin := e.netbootBase(ctx, t, dir)
	withRoot(t, myBase, func(root *ext4.FS) {
		wants := "/etc/systemd/system/multi-user.target.wants"
		if err := root.MkdirAll(wants, ext4.Attr{Mode: 0o755}); err != nil {
			t.Fatal(err)
		}
		if err := root.Symlink("/lib/systemd/system/systemd-networkd.service", wants+"/systemd-networkd.service", ext4.Attr{}); err != nil {
			t.Fatal(err)
		}
	})
	mirror, err := releaseMirror("arm64", standin)
	if err != nil {
		t.Fatal(err)
	}
	defer mirror.Close()

	imgbake := func(args ...string) string {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = dir
		cmd.Stdin = strings.NewReader(e2ePassword + "\n")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("imgbake %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	imgbake("init", "--server", shServer, "--base", myBase, "--user", e2eUser, "--password")
	cluster := "server: " + shServer + "\nuser: {name: " + e2eUser + "}" + "\nk3s: {version: " + k3sVersion + ", release-url: " + mirror.URL + "}\nbase: base.img\ncache-dir: cache\nnodes:\n" +
		"  - name: k1\n    profile: server\n    address: " + shServer + "/24\n    netboot-server: {interface: eth0, disk-size: 2G}\n" +
		"  - name: k5\n    profile: worker\n    netboot: {serial: " + nbSerial + ", mac: \"" + nbMAC + "\"}\n"
	if err := os.WriteFile(filepath.Join(dir, "imgbake.yaml"), []byte(cluster), 0o644); err != nil {
		t.Fatal(err)
	}
	// The fixture does not grow its root file system at first boot as
	// Raspberry Pi OS does: give the server room for the base it unpacks.
	out := imgbake("build", "--size", "3G", "k1")
	if strings.Contains(out, "warning") {
		t.Errorf("build k1 warned:\n%s", out)
	}
	disk := diskCopy(t, filepath.Join(dir, "out", "k1.img"), "k1.img")

	lan, fw := nbSetupNetns(t)
	defer e.slot(ctx, t)()
	spec, err := extractBoot(ctx, disk, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	v := startVMOn(ctx, t, "k1-netboot-server", "arm64", disk, spec, vmNet{ns: lan, tap: "tap0", mac: shMAC, memMiB: 1536})
	bctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	if _, err := v.record(bctx, "netboot_svc"); err != nil {
		t.Fatalf("booting the server node: %v", err)
	}
	v.record(bctx, "netboot_log")
	rec := v.snapshot()
	t.Logf("k1 booted in %s; imgbake-netboot.service: %s; its log:\n%s", elapsedSince(t0), rec["netboot_svc"], rec["netboot_log"])
	checkNode(t, rec, spec, expect{Role: "server", Hostname: "k1", Config: []string{"node-name: k1", "- " + shServer}})
	if !strings.HasPrefix(rec["multi_user"], "active") {
		t.Errorf("multi-user.target: %s", rec["multi_user"])
	}
	// Started before systemd-networkd configured eth0, it waited for the
	// address instead of failing and being restarted.
	if svc := rec["netboot_svc"]; !strings.Contains(svc, "LoadState=loaded") || !strings.Contains(svc, "ActiveState=active") || !strings.Contains(svc, "NRestarts=0") {
		t.Fatalf("imgbake-netboot.service: %s", svc)
	}

	// A Pi 4 on the LAN: the server node answers once it has built k5's
	// image (under emulation that takes minutes; the Pi keeps retrying).
	var nbdSize uint64
	pi := piFirmware{serial: nbSerial, mac: nbMAC, addr: nbGuest, dhcp: true, server: shServer, firstFiles: true,
		then: func() { nbdSize = nbdHandshake(ctx, t, fw, shServer+":10809", "k5") }}
	t1 := time.Now()
	for {
		var ok bool
		if spec, ok = piBoot(ctx, t, lan, fw, dir, pi); ok {
			break
		}
		if time.Since(t1) > 20*time.Minute || ctx.Err() != nil {
			t.Fatalf("the server node served no boot files for k5 within %s", elapsedSince(t1))
		}
		time.Sleep(10 * time.Second)
	}
	t.Logf("k5's boot files came %s after k1 was up", elapsedSince(t1))
	if !strings.Contains(spec.Cmdline, "imgbake.nbd="+shServer+":10809/k5 ") {
		t.Errorf("served command line %q", spec.Cmdline)
	}
	if nbdSize != 2<<30 {
		t.Errorf("k5's disk over NBD is %d bytes, want the 2 GiB of disk-size", nbdSize)
	}
	powerOffClean(ctx, t, v, disk)
}

// buildImgbakePair builds imgbake for this machine as bin/imgbake and for
// arm64 as bin/imgbake-linux-arm64, stamped as `make cross` stamps them.
func buildImgbakePair(ctx context.Context, t *testing.T, repo string) string {
	t.Helper()
	dir := t.TempDir()
	ld := "-X github.com/imgbake/imgbake/internal/version.Version=e2e -X github.com/imgbake/imgbake/internal/version.Commit=" + strings.Repeat("e2e5", 10)
	for _, b := range []struct{ out, goarch string }{{"imgbake", ""}, {"imgbake-linux-arm64", "arm64"}} {
		for _, args := range [][]string{{"generate", "./netboot/initramfs"}, {"build", "-trimpath", "-ldflags", ld, "-o", filepath.Join(dir, b.out), "./cmd/imgbake"}} {
			cmd := exec.CommandContext(ctx, goTool(), args...)
			cmd.Dir = repo
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if b.goarch != "" && args[0] == "build" {
				cmd.Env = append(cmd.Env, "GOOS=linux", "GOARCH="+b.goarch)
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
	}
	return filepath.Join(dir, "imgbake")
}

// withRoot opens the root file system of img for changes.
func withRoot(t *testing.T, img string, change func(root *ext4.FS)) {
	t.Helper()
	info, err := image.Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	rp, _ := info.Partition(info.RootPartition)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	root, err := ext4.Open(f, rp.Start, rp.Size, nil)
	if err != nil {
		t.Fatal(err)
	}
	change(root)
	if err := root.Close(); err != nil {
		t.Fatal(err)
	}
}

// nbdHandshake runs TestNBDHelper in the firmware namespace: an NBD
// client's handshake for export at addr; it returns the export's size.
func nbdHandshake(ctx context.Context, t *testing.T, ns, addr, export string) uint64 {
	t.Helper()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestNBDHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "IMGBAKE_E2E_NBD="+addr+"/"+export)
	out, err := cmd.CombinedOutput()
	var size uint64
	if i := strings.Index(string(out), "NBD EXPORT size="); i >= 0 {
		fmt.Sscanf(string(out[i:]), "NBD EXPORT size=%d", &size)
	}
	if err != nil || size == 0 {
		t.Errorf("NBD handshake with %s for %s: %v\n%s", addr, export, err, out)
	}
	return size
}

// TestNBDHelper is not a test: nbdHandshake runs it in a network
// namespace to shake hands with an NBD server as the node's /init does.
func TestNBDHelper(t *testing.T) {
	env := os.Getenv("IMGBAKE_E2E_NBD")
	if env == "" {
		return
	}
	addr, export, _ := strings.Cut(env, "/")
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	x, err := nbd.Handshake(c, export)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("NBD EXPORT size=%d", x.Size)
}

// netbootBase is the arm64 base in dir/base.img, with the nbd module a
// Raspberry Pi OS kernel has, and the stand-in k3s for it.
func (e *env) netbootBase(ctx context.Context, t *testing.T, dir string) (base, standin string) {
	t.Helper()
	orig, err := e.baseImage(ctx, t, "arm64")
	if err != nil {
		t.Fatal(err)
	}
	if standin, err = e.standinBinary(ctx, "arm64"); err != nil {
		t.Fatal(err)
	}
	base = filepath.Join(dir, "base.img")
	nbRun(t, "cp", "--sparse=always", orig, base)
	addNBDModule(t, base)
	return base, standin
}
