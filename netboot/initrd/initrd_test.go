//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/imgbake/imgbake/netboot/nbd"
)

func TestParseCmdline(t *testing.T) {
	p, err := parseCmdline("console=serial0,115200 console=tty1 root=/dev/nbd0p2 rootfstype=ext4 imgbake.nbd=192.168.1.5:10809/k5 ip=dhcp rootwait cgroup_memory=1 cgroup_enable=memory\n")
	if err != nil {
		t.Fatal(err)
	}
	want := params{server: "192.168.1.5:10809", export: "k5", root: "/dev/nbd0p2", fstype: "ext4", readOnly: true, init: "/sbin/init"}
	if diff := cmp.Diff(want, p, cmp.AllowUnexported(params{})); diff != "" {
		t.Errorf("params (-want +got):\n%s", diff)
	}
	p, err = parseCmdline("rw init=/lib/systemd/systemd imgbake.nbd=srv/k6 ip=10.0.0.2::10.0.0.1:255.255.255.0::eth1:off")
	if err != nil || p.readOnly || p.init != "/lib/systemd/systemd" || p.server != "srv:10809" || p.ifname != "eth1" || p.root != "/dev/nbd0p2" {
		t.Errorf("params = %+v, %v", p, err)
	}
	for _, bad := range []string{"root=/dev/mmcblk0p2", "imgbake.nbd=srv:10809", "imgbake.nbd=srv:99999/k5", "imgbake.nbd=srv/k5 root=PARTUUID=1234-02"} {
		if _, err := parseCmdline(bad); err == nil {
			t.Errorf("parseCmdline(%q) accepted", bad)
		}
	}
}

type memDisk struct{ b []byte }

func (m *memDisk) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m.b[off:]), nil }
func (m *memDisk) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }
func (m *memDisk) Sync() error                              { return nil }

// TestHandshake runs the initrd's NBD negotiation against imgbake's own NBD
// server over loopback, then reads a block through the connection with a
// raw NBD_CMD_READ (what the kernel does after the socket is handed over).
func TestHandshake(t *testing.T) {
	disk := &memDisk{b: make([]byte, 1<<20)}
	copy(disk.b[4096:], "partition table here")
	srv := &nbd.Server{Backend: nbd.BackendFunc(func(_ context.Context, name string, _ netip.Addr) (nbd.Export, error) {
		if name != "k5" {
			return nbd.Export{}, nbd.ErrUnknownExport
		}
		return nbd.Export{Name: name, Disk: disk, Size: int64(len(disk.b)), Client: netip.MustParseAddr("127.0.0.1")}, nil
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx, l) }()
	defer func() { cancel(); <-done }()

	if _, _, err := dial(ctx, l.Addr().String(), "k6"); err == nil {
		t.Error("unknown export accepted")
	}
	c, exp, err := dial(ctx, l.Addr().String(), "k5")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if exp.Size != 1<<20 || exp.Flags&1 == 0 {
		t.Errorf("export = %+v, want size 1 MiB and NBD_FLAG_HAS_FLAGS", exp)
	}
	// NBD_CMD_READ of 20 bytes at 4096.
	req := binary.BigEndian.AppendUint32(nil, 0x25609513)
	req = binary.BigEndian.AppendUint16(req, 0)
	req = binary.BigEndian.AppendUint16(req, 0)
	req = binary.BigEndian.AppendUint64(req, 42)
	req = binary.BigEndian.AppendUint64(req, 4096)
	req = binary.BigEndian.AppendUint32(req, 20)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, 16+20)
	if _, err := io.ReadFull(c, reply); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint32(reply) != 0x67446698 || binary.BigEndian.Uint32(reply[4:]) != 0 || string(reply[16:]) != "partition table here" {
		t.Errorf("read reply %q", reply)
	}
}

func TestDropIns(t *testing.T) {
	nc := netConfig{ifname: "eth0", dns: []string{"192.168.1.1"}, domain: "lan"}
	got := map[string]string{}
	for _, f := range dropIns(nc) {
		got[f.path] = f.data
	}
	if !strings.Contains(got["NetworkManager/conf.d/90-imgbake-netboot.conf"], "unmanaged-devices=interface-name:eth0") {
		t.Errorf("NetworkManager drop-in: %q", got)
	}
	if !strings.Contains(got["systemd/network/00-imgbake-netboot.network"], "Name=eth0\n\n[Link]\nUnmanaged=yes") {
		t.Errorf("networkd drop-in: %q", got)
	}
	if !strings.Contains(got["systemd/resolved.conf.d/90-imgbake-netboot.conf"], "DNS=192.168.1.1\nDomains=lan") {
		t.Errorf("resolved drop-in: %q", got)
	}
	if r := resolvConf(nc); !strings.Contains(r, "search lan\nnameserver 192.168.1.1\n") {
		t.Errorf("resolv.conf %q", r)
	}
	if d := dhcpcdConf("hostname\nslaac private", "eth0"); !strings.HasPrefix(d, "hostname\nslaac private\n") || !strings.HasSuffix(d, "denyinterfaces eth0\n") {
		t.Errorf("dhcpcd.conf %q", d)
	}
}

func TestNetlinkAttrs(t *testing.T) {
	b := socketsAttr(7)
	// NBD_ATTR_SOCKETS(nested) > NBD_SOCK_ITEM(nested) > NBD_SOCK_FD u32.
	want := []byte{20, 0, 7, 0x80, 16, 0, 1, 0x80, 8, 0, 1, 0, 7, 0, 0, 0}
	binary.NativeEndian.PutUint16(want[0:], 20-4) // lengths are native-endian
	binary.NativeEndian.PutUint16(want[4:], 16-4)
	binary.NativeEndian.PutUint16(want[8:], 8)
	binary.NativeEndian.PutUint16(want[2:], nbdAttrSockets|nlaNested)
	binary.NativeEndian.PutUint16(want[6:], nbdSockItem|nlaNested)
	binary.NativeEndian.PutUint16(want[10:], nbdSockFD)
	binary.NativeEndian.PutUint32(want[12:], 7)
	if diff := cmp.Diff(want, b); diff != "" {
		t.Errorf("sockets attribute (-want +got):\n%s", diff)
	}
	var seen []uint16
	for typ, val := range attrs(append(attr(1, []byte("nbd\x00x")), attr(2, u32(9))...)) {
		seen = append(seen, typ)
		if typ == 2 && binary.NativeEndian.Uint32(val) != 9 {
			t.Errorf("attr 2 = %v", val)
		}
	}
	if diff := cmp.Diff([]uint16{1, 2}, seen); diff != "" {
		t.Errorf("attrs: %s", diff)
	}
}
