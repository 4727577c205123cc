package serve

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgbake/imgbake/image"
	"github.com/imgbake/imgbake/image/ext4"
	"github.com/imgbake/imgbake/image/fat"
	"github.com/imgbake/imgbake/internal/fixture"
	"github.com/imgbake/imgbake/netboot"
	"github.com/imgbake/imgbake/netboot/binding"
	"github.com/imgbake/imgbake/netboot/dhcp"
	"github.com/imgbake/imgbake/netboot/node"
)

const (
	serial  = "1234abcd"
	macText = "dc:a6:32:01:36:c2"
	release = "6.6.51+rpt-rpi-v8"
	nbdKo   = "\x7fELF nbd module for " + release
	ourInit = "\x7fELF test init"
)

// nodeImage makes out/k5.img: a Raspberry Pi OS fixture with an
// initramfs8 on its FAT and an xz-compressed nbd module on its root, as
// an installed Raspberry Pi kernel has them.
func nodeImage(t *testing.T, dir string) (img string, initrd []byte) {
	t.Helper()
	img = filepath.Join(dir, "out", "k5.img")
	os.MkdirAll(filepath.Dir(img), 0o755)
	if err := os.Rename(fixture.Build(t, fixture.RaspiOSBookwormArm64), img); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "init"), []byte("#!/bin/sh\n# initramfs-tools\n"), 0o755)
	cmd := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet | gzip -n")
	cmd.Dir = src
	initrd, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	ko := filepath.Join(src, "nbd.ko")
	os.WriteFile(ko, []byte(nbdKo), 0o644)
	if out, err := exec.Command("xz", "-k", ko).CombinedOutput(); err != nil {
		t.Fatalf("xz: %v\n%s", err, out)
	}
	koXZ, _ := os.ReadFile(ko + ".xz")

	writeFAT(t, img, "initramfs8", string(initrd))
	writeFAT(t, img, "bootcode.bin", "bootcode for every Pi")
	f, info := openImage(t, img)
	rp, _ := info.Partition(info.RootPartition)
	root, err := ext4.Open(f, rp.Start, rp.Size, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := ext4.Attr{Mode: 0o644}
	dirA := ext4.Attr{Mode: 0o755}
	base := "/lib/modules/" + release
	if err := root.MkdirAll(base+"/kernel/drivers/block", dirA); err != nil {
		t.Fatal(err)
	}
	root.WriteFile(base+"/kernel/drivers/block/nbd.ko.xz", koXZ, a)
	root.WriteFile(base+"/modules.dep", []byte("kernel/drivers/block/nbd.ko.xz:\n"), a)
	if err := root.Close(); err != nil {
		t.Fatal(err)
	}
	return img, initrd
}

// running is one Server on loopback.
type running struct {
	tftp, nbd string // host:port
	cancel    context.CancelFunc
	done      chan error
}

func start(t *testing.T, s *Server) *running {
	t.Helper()
	u, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.NBDPort = uint16(l.Addr().(*net.TCPAddr).Port)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{tftp: u.LocalAddr().String(), nbd: l.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Serve(ctx, Listeners{TFTP: u, NBD: l}) }()
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
	}
}

func (r *running) get(t *testing.T, name string) ([]byte, error) {
	t.Helper()
	host, port, _ := net.SplitHostPort(r.tftp)
	out := filepath.Join(t.TempDir(), "got")
	cmd := exec.Command("atftp", "--option", "blksize 1024", "--option", "tsize 0", "-g", "-r", name, "-l", out, host, port)
	if o, err := cmd.CombinedOutput(); err != nil {
		return nil, errors.New(string(o))
	}
	return os.ReadFile(out)
}

func (r *running) mustGet(t *testing.T, name string) []byte {
	t.Helper()
	b, err := r.get(t, name)
	if err != nil {
		t.Fatalf("atftp %s: %v", name, err)
	}
	return b
}

// sameAsDisk reads the whole NBD export with qemu-img and compares it
// with the disk file.
func sameAsDisk(t *testing.T, r *running, disk string) error {
	t.Helper()
	return sameAsDiskNamed(t, r, disk, "k5")
}

// sameAsDiskNamed is sameAsDisk for the export name.
func sameAsDiskNamed(t *testing.T, r *running, disk, name string) error {
	t.Helper()
	out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", disk, "nbd://"+r.nbd+"/"+name).CombinedOutput()
	if err != nil {
		return errors.New(string(out))
	}
	if !strings.Contains(string(out), "identical") {
		return errors.New(string(out))
	}
	return nil
}

func TestServeNode(t *testing.T) {
	fixture.RequireTools(t)
	fixture.NeedTools(t, "atftp", "qemu-img", "cpio", "xz", "gzip")
	dir := t.TempDir()
	img, initrd := nodeImage(t, dir)
	store := &node.Store{StateDir: filepath.Join(dir, "state"), ImageDir: filepath.Dir(img), DiskSize: 256 << 20}
	mac, _ := net.ParseMAC(macText)
	nodes := []Node{{Name: "k5", Serial: serial, MAC: mac}}
	newServer := func() *Server {
		return &Server{Nodes: nodes, Disks: store, Addr: netip.MustParseAddr("127.0.0.1"),
			Neighbors: binding.NeighborsFunc(func(a netip.Addr) (net.HardwareAddr, bool) {
				return mac, a == netip.MustParseAddr("127.0.0.1")
			}),
			Init: func(arch string) ([]byte, error) {
				if arch != "arm64" {
					t.Errorf("init asked for %s, want arm64", arch)
				}
				return []byte(ourInit), nil
			}}
	}
	r := start(t, newServer())
	disk := store.DiskPath("k5")

	// Before the node has fetched its boot files, nobody gets its disk.
	if err := sameAsDisk(t, r, disk); err == nil {
		t.Error("NBD export served before the node booted")
	}
	// An unknown Pi gets nothing.
	if _, err := r.get(t, "99999999/start4.elf"); err == nil {
		t.Error("unknown serial served")
	}

	// Boot files, as a Pi 4 asks for them.
	cmdline := string(r.mustGet(t, serial+"/cmdline.txt"))
	wantCmd := "console=serial0,115200 console=tty1 "
	if !strings.HasPrefix(cmdline, wantCmd) || !strings.HasSuffix(cmdline, " root=/dev/nbd0p2 imgbake.nbd="+r.nbd+"/k5 ip=dhcp rootwait\n") || strings.Contains(cmdline, "PARTUUID") {
		t.Errorf("cmdline.txt = %q", cmdline)
	}
	config := r.mustGet(t, serial+"/config.txt")
	if !bytes.Contains(config, []byte("auto_initramfs=1")) {
		t.Errorf("config.txt = %q", config)
	}
	start4 := r.mustGet(t, serial+"/start4.elf")
	if !bytes.HasPrefix(start4, []byte("start4 start4")) {
		t.Errorf("start4.elf = %.20q", start4)
	}
	if got := r.mustGet(t, "dc-a6-32-01-36-c2/start4.elf"); !bytes.Equal(got, start4) {
		t.Error("start4.elf by MAC prefix differs")
	}
	// The Pi 3B ROM asks for bootcode.bin without a prefix.
	if got := r.mustGet(t, "bootcode.bin"); string(got) != "bootcode for every Pi" {
		t.Errorf("bootcode.bin = %q", got)
	}

	// The initramfs: the node's own, then ours, starting 4-byte aligned.
	served := r.mustGet(t, serial+"/initramfs8")
	if !bytes.HasPrefix(served, initrd) {
		t.Fatal("served initramfs8 does not start with the node's")
	}
	off := (len(initrd) + 3) &^ 3
	if !bytes.Equal(served[len(initrd):off], make([]byte, off-len(initrd))) || !bytes.HasPrefix(served[off:], []byte("070701")) {
		t.Fatalf("no aligned cpio after the node's initramfs (at %d: %.8q)", off, served[off:])
	}
	ext := t.TempDir()
	cmd := exec.Command("cpio", "-i", "-d", "--quiet", "--nonmatching", "dev/console")
	cmd.Dir, cmd.Stdin = ext, bytes.NewReader(served[off:])
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, o)
	}
	if b, _ := os.ReadFile(filepath.Join(ext, "init")); string(b) != ourInit {
		t.Errorf("/init = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(ext, "imgbake/modules", release, "00-nbd.ko")); string(b) != nbdKo {
		t.Errorf("nbd module = %q (want it decompressed from the node's disk)", b)
	}

	// Now the node's disk is served, to it.
	if err := sameAsDisk(t, r, disk); err != nil {
		t.Fatalf("NBD export differs from the disk: %v", err)
	}
	if a, _ := os.ReadFile(filepath.Join(store.StateDir, "k5", "binding")); string(a) != "127.0.0.1 "+macText+"\n" {
		t.Errorf("saved binding %q", a)
	}
	// The disk holds the join token: only root reads the state directory.
	for _, d := range []string{store.StateDir, filepath.Join(store.StateDir, "k5")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v, %v; want mode 0700", d, fi.Mode(), err)
		}
	}

	// A restarted server serves the running node's disk without a new TFTP boot.
	r.stop()
	r = start(t, newServer())
	if err := sameAsDisk(t, r, disk); err != nil {
		t.Fatalf("after a restart: %v", err)
	}

	// Rebuilding the image leaves the disk alone; reset replaces it and the
	// running server serves the new one.
	before, _ := os.ReadFile(disk)
	writeFAT(t, img, "config.txt", "arm_64bit=1\n")
	if got := r.mustGet(t, serial+"/config.txt"); !bytes.Equal(got, config) {
		t.Errorf("a rebuilt image changed the served config.txt: %q", got)
	}
	if after, _ := os.ReadFile(disk); !bytes.Equal(before, after) {
		t.Error("serving changed the disk")
	}
	if err := store.Reset(context.Background(), "k5"); err != nil {
		t.Fatal(err)
	}
	got := string(r.mustGet(t, serial+"/config.txt"))
	if !strings.HasPrefix(got, "arm_64bit=1\n") || !strings.Contains(got, "initramfs "+netboot.AddedInitramfs+" followkernel") {
		t.Errorf("config.txt after reset = %q", got)
	}
	if served := r.mustGet(t, serial+"/"+netboot.AddedInitramfs); !bytes.HasPrefix(served, []byte("070701")) {
		t.Errorf("added initramfs does not start with a cpio header: %.8q", served)
	}
	if err := sameAsDisk(t, r, disk); err != nil {
		t.Fatalf("after reset: %v", err)
	}
}

// openImage inspects img and opens it read-write until the test ends.
func openImage(t *testing.T, img string) (*os.File, *image.Info) {
	t.Helper()
	info, err := image.Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, info
}

func writeFAT(t *testing.T, img, name, data string) {
	t.Helper()
	f, info := openImage(t, img)
	bp, _ := info.Partition(info.BootPartition)
	boot, err := fat.Open(f, bp.Start, bp.Size, false, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := boot.WriteFile(name, []byte(data)); err != nil {
		t.Fatal(err)
	}
	if err := boot.Sync(); err != nil {
		t.Fatal(err)
	}
}

func TestLookupMachine(t *testing.T) {
	mac, _ := net.ParseMAC(macText)
	other, _ := net.ParseMAC("b8:27:eb:00:00:01")
	s := &Server{Nodes: []Node{{Name: "k5", Serial: serial}, {Name: "k3", MAC: other}, {Name: "k9", Serial: "0000abcd", MAC: mac}}}
	for _, c := range []struct {
		m    dhcp.Machine
		want string
	}{
		{dhcp.Machine{MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Serial: serial}, "k5"},
		{dhcp.Machine{MAC: other}, "k3"}, // a Pi 3B: no serial in its DHCP request
		{dhcp.Machine{MAC: mac, Serial: "ffffffff"}, "k9"},
		{dhcp.Machine{MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, Serial: "ffffffff"}, ""},
	} {
		n, err := s.lookupMachine(context.Background(), c.m)
		if c.want == "" {
			if !errors.Is(err, dhcp.ErrUnknownMachine) {
				t.Errorf("%v: %v, %v; want ErrUnknownMachine", c.m, n, err)
			}
			continue
		}
		if err != nil || n.Name != c.want {
			t.Errorf("%v = %v, %v; want %s", c.m, n, err, c.want)
		}
	}
}
