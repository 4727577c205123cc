package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgbake/imgbake/internal/fixture"
	"github.com/imgbake/imgbake/netboot/dhcp"
	"github.com/imgbake/imgbake/netboot/nbd"
	"github.com/imgbake/imgbake/netboot/node"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

// The attack tests run `imgbake netboot`'s servers in a process of their
// own inside a network namespace (so that its neighbour table, its TFTP
// transfer sockets and its memory are those of the server alone), on a
// bridge with two machines: the node (nodeMAC, 10.77.0.2) and another
// host on the same network (evilMAC, 10.77.0.66).
const (
	srvIP     = "10.77.0.1"
	nodeIP    = "10.77.0.2"
	nodeIP2   = "10.77.0.12"
	evilIP    = "10.77.0.66"
	nodeMAC   = "dc:a6:32:01:36:c2"
	evilMAC   = "02:00:00:00:00:66"
	helperEnv = "IMGBAKE_SERVE_HELPER"
)

// helperConfig is what the test passes to the server process.
type helperConfig struct {
	StateDir, ImageDir string
	MAC                string // k5's; "" for a node known by serial only
	DHCP               string // interface for the DHCP proxy; "" for none
	K6                 bool   // a second node, k6 (serial 5678abcd, evilMAC)
}

// TestServerHelper is the server process of the namespace tests; it does
// nothing in a normal test run.
func TestServerHelper(t *testing.T) {
	env := os.Getenv(helperEnv)
	if env == "" {
		t.Skip("the server process of the network-namespace tests")
	}
	var c helperConfig
	if err := json.Unmarshal([]byte(env), &c); err != nil {
		t.Fatal(err)
	}
	n := Node{Name: "k5", Serial: "1234abcd"}
	if c.MAC != "" {
		n.MAC, _ = net.ParseMAC(c.MAC)
	}
	nodes := []Node{n}
	if c.K6 {
		mac, _ := net.ParseMAC(evilMAC)
		nodes = append(nodes, Node{Name: "k6", Serial: "5678abcd", MAC: mac})
	}
	s := &Server{Nodes: nodes, Disks: &node.Store{StateDir: c.StateDir, ImageDir: c.ImageDir, DiskSize: 256 << 20},
		Addr: netip.MustParseAddr(srvIP), Init: func(string) ([]byte, error) { return []byte(ourInit), nil },
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	var l Listeners
	var err error
	if c.DHCP != "" {
		if l.DHCP, err = dhcp.Listen(ctx, c.DHCP, ":67"); err != nil {
			t.Fatal(err)
		}
	}
	if l.TFTP, err = net.ListenPacket("udp4", srvIP+":69"); err != nil {
		t.Fatal(err)
	}
	if l.NBD, err = net.Listen("tcp4", srvIP+":10809"); err != nil {
		t.Fatal(err)
	}
	fmt.Println("helper: serving")
	if err := s.Serve(ctx, l); err != nil {
		t.Fatal(err)
	}
}

// lan is the test network.
type lan struct {
	srv, node, evil fixture.Netns
	dir             string // image and state
	serverLog       string
}

func newLAN(t *testing.T) *lan {
	t.Helper()
	fixture.RequireTools(t)
	fixture.NeedTools(t, "atftp", "cpio", "xz", "gzip")
	l := &lan{srv: fixture.NewNetns(t, "srv"), node: fixture.NewNetns(t, "node"), evil: fixture.NewNetns(t, "evil"), dir: t.TempDir()}
	l.srv.IP(t, "link", "add", "br0", "type", "bridge")
	l.srv.IP(t, "addr", "add", srvIP+"/24", "dev", "br0")
	l.srv.IP(t, "link", "set", "br0", "up")
	for _, h := range []struct {
		ns       fixture.Netns
		mac, ip  string
		ifn, prt string
	}{{l.node, nodeMAC, nodeIP, "n0", "pn"}, {l.evil, evilMAC, evilIP, "e0", "pe"}} {
		h.ns.Veth(t, h.ifn, h.mac, l.srv, h.prt)
		l.srv.IP(t, "link", "set", h.prt, "master", "br0", "up")
		h.ns.IP(t, "addr", "add", h.ip+"/24", "dev", h.ifn)
		h.ns.IP(t, "link", "set", h.ifn, "up")
	}
	nodeImage(t, l.dir)
	l.serverLog = filepath.Join(l.dir, "server.log")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(l.serverLog)
			t.Logf("server log:\n%s", b)
		}
	})
	return l
}

// server is the server process.
type server struct {
	cmd  *exec.Cmd
	done chan error
}

func (l *lan) start(t *testing.T, c helperConfig) *server {
	t.Helper()
	c.StateDir, c.ImageDir = filepath.Join(l.dir, "state"), filepath.Join(l.dir, "out")
	env, _ := json.Marshal(c)
	logf, err := os.OpenFile(l.serverLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	s := &server{cmd: l.srv.Command(os.Args[0], "-test.run=^TestServerHelper$"), done: make(chan error, 1)}
	s.cmd.Env = append(os.Environ(), helperEnv+"="+string(env))
	s.cmd.Stderr = logf
	out, _ := s.cmd.StdoutPipe()
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "helper: serving") {
				ready <- true
			}
		}
		s.done <- s.cmd.Wait()
	}()
	select {
	case <-ready:
	case err := <-s.done:
		t.Fatalf("server process exited: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("server process did not start within a minute")
	}
	t.Cleanup(func() { s.stop(t) })
	return s
}

func (s *server) stop(t *testing.T) {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		t.Error("server process did not stop within 30 s of SIGTERM")
	}
	s.cmd = nil
}

// rss is the server process's resident memory in bytes.
func (s *server) rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func (l *lan) log(t *testing.T) string {
	b, err := os.ReadFile(l.serverLog)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tftp fetches name from the server as host ns; it returns the contents,
// or the client's output as the error.
func tftpFrom(t *testing.T, ns fixture.Netns, name string) ([]byte, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "got")
	cmd := ns.Command("atftp", "--option", "blksize 1024", "--option", "tsize 0", "-g", "-r", name, "-l", out, srvIP, "69")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, errors.New(string(b))
	}
	return os.ReadFile(out)
}

// pi4Discover is the Pi 4 bootloader's DISCOVER with chaddr mac and serial
// in option 97.
func pi4Discover(t *testing.T, mac net.HardwareAddr, serial uint32) *dhcpv4.DHCPv4 {
	t.Helper()
	o97 := append([]byte{0}, "RPi4"...)
	o97 = binary.BigEndian.AppendUint32(o97, 0xc03111)
	o97 = append(o97, mac[2:6]...)
	o97 = binary.BigEndian.AppendUint32(o97, serial)
	p, err := dhcpv4.NewDiscovery(mac, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(dhcp.PiVendorClass)),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, o97)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// piDHCP sends the Pi 4 bootloader's DISCOVER from interface ifn in ns,
// with chaddr mac and serial in option 97, and waits for the OFFER.
func piDHCP(t *testing.T, ns fixture.Netns, ifn, mac string, serial uint32) error {
	t.Helper()
	hw, _ := net.ParseMAC(mac)
	var c net.PacketConn
	if err := ns.Do(func() (err error) { c, err = dhcp.Listen(context.Background(), ifn, ":68"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := pi4Discover(t, hw, serial)
	if _, err := c.WriteTo(req.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 67}); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no OFFER: %w", err)
		}
		if p, err := dhcpv4.FromBytes(buf[:n]); err == nil && p.TransactionID == req.TransactionID && p.MessageType() == dhcpv4.MessageTypeOffer {
			return nil
		}
	}
}

// nbdFrom connects to the k5 export from ns; it returns the connection,
// ready for transmission.
func nbdFrom(t *testing.T, ns fixture.Netns) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	if err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", srvIP+":10809", 5*time.Second)
		return err
	}); err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nbd.Handshake(c, "k5"); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// readBlock reads the first 512 bytes of the export over c.
func readBlock(c net.Conn) ([]byte, error) {
	req := binary.BigEndian.AppendUint32(nil, 0x25609513)
	req = binary.BigEndian.AppendUint16(req, 0)
	req = binary.BigEndian.AppendUint16(req, 0) // NBD_CMD_READ
	req = binary.BigEndian.AppendUint64(req, 1)
	req = binary.BigEndian.AppendUint64(req, 0)
	req = binary.BigEndian.AppendUint32(req, 512)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(req); err != nil {
		return nil, err
	}
	reply := make([]byte, 16+512)
	if _, err := io.ReadFull(c, reply); err != nil {
		return nil, err
	}
	if binary.BigEndian.Uint32(reply[4:]) != 0 {
		return nil, fmt.Errorf("NBD error %d", binary.BigEndian.Uint32(reply[4:]))
	}
	return reply[16:], nil
}

// leaks reports whether a refusal shown to a client names the node's
// address or MAC.
func leaks(msg string) bool {
	return strings.Contains(msg, nodeIP) || strings.Contains(msg, nodeIP2) || strings.Contains(msg, nodeMAC)
}

// TestImpersonationNetns is the attack of issue #9 section 1: another host
// on the nodes' network asks for a node's files with its serial (which the
// Pi broadcasts in its DHCP request) to get the node's disk. It must get
// nothing, learn nothing, and the node must keep its disk; the node must
// still be able to boot again from a new address and after a restart.
func TestImpersonationNetns(t *testing.T) {
	l := newLAN(t)
	srv := l.start(t, helperConfig{DHCP: "br0"}) // k5 known by serial only, as most Pi 4s are configured

	// A lone request, before the node ever booted: refused, nothing bound.
	if _, err := tftpFrom(t, l.evil, "1234abcd/config.txt"); err == nil {
		t.Error("a lone TFTP request with the node's serial got its config.txt")
	} else if leaks(err.Error()) {
		t.Errorf("the refusal names the node: %v", err)
	}

	// The node boots: DHCP, then its files.
	if err := piDHCP(t, l.node, "n0", nodeMAC, 0x1234abcd); err != nil {
		t.Fatal(err)
	}
	if _, err := tftpFrom(t, l.node, "1234abcd/config.txt"); err != nil {
		t.Fatalf("the node's own config.txt: %v", err)
	}
	// Between its files and its disk, another host poses as the node: it
	// sends the node's serial in a DHCP request of its own and asks for
	// the node's files.
	if err := piDHCP(t, l.evil, "e0", evilMAC, 0x1234abcd); err != nil {
		t.Fatal(err)
	}
	if _, err := tftpFrom(t, l.evil, "1234abcd/cmdline.txt"); err == nil {
		t.Error("another host got the booting node's cmdline.txt")
	}
	if c, err := nbdFrom(t, l.evil); err == nil {
		c.Close()
		t.Error("another host got the booting node's disk")
	} else if leaks(err.Error()) {
		t.Errorf("the NBD refusal names the node: %v", err)
	}
	// The node gets its disk.
	nc, err := nbdFrom(t, l.node)
	if err != nil {
		t.Fatalf("the node cannot attach its disk: %v", err)
	}
	if b, err := readBlock(nc); err != nil || !bytes.Equal(b[510:], []byte{0x55, 0xaa}) {
		t.Fatalf("reading the node's disk: %v", err)
	}
	// While it runs, nobody else gets it, by TFTP or NBD.
	piDHCP(t, l.evil, "e0", evilMAC, 0x1234abcd)
	if _, err := tftpFrom(t, l.evil, "1234abcd/config.txt"); err == nil {
		t.Error("another host got the running node's config.txt")
	}
	if c, err := nbdFrom(t, l.evil); err == nil {
		c.Close()
		t.Error("another host got the running node's disk")
	}
	if _, err := readBlock(nc); err != nil {
		t.Errorf("the node lost its disk: %v", err)
	}
	log := l.log(t)
	for _, s := range []string{"possible impersonation", evilIP, nodeIP, evilMAC, nodeMAC} {
		if !strings.Contains(log, s) {
			t.Errorf("server log lacks %q", s)
		}
	}
	if _, err := os.Stat(filepath.Join(l.dir, "state", "k5", "address")); err == nil {
		t.Error("an address file is saved")
	}

	// The node reboots with a new address: its old connection ends, a new
	// DHCP exchange, its files, its disk.
	nc.Close()
	l.node.IP(t, "addr", "flush", "dev", "n0")
	l.node.IP(t, "addr", "add", nodeIP2+"/24", "dev", "n0")
	if err := piDHCP(t, l.node, "n0", nodeMAC, 0x1234abcd); err != nil {
		t.Fatal(err)
	}
	var got error
	for try := 0; try < 20; try++ { // the server notices the closed connection
		if _, got = tftpFrom(t, l.node, "1234abcd/config.txt"); got == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got != nil {
		t.Fatalf("the node cannot boot again from a new address: %v", got)
	}
	if nc, err = nbdFrom(t, l.node); err != nil {
		t.Fatalf("the node cannot attach its disk from its new address: %v", err)
	}
	nc.Close()

	// A restarted server lets the node reconnect, and nobody else.
	srv.stop(t)
	if b, _ := os.ReadFile(filepath.Join(l.dir, "state", "k5", "binding")); string(b) != nodeIP2+" "+nodeMAC+"\n" {
		t.Errorf("saved binding %q", b)
	}
	l.start(t, helperConfig{DHCP: "br0"})
	if c, err := nbdFrom(t, l.evil); err == nil {
		c.Close()
		t.Error("after a restart another host got the node's disk")
	}
	piDHCP(t, l.evil, "e0", evilMAC, 0x1234abcd)
	if _, err := tftpFrom(t, l.evil, "1234abcd/config.txt"); err == nil {
		t.Error("after a restart another host got the node's files")
	}
	if nc, err = nbdFrom(t, l.node); err != nil {
		t.Fatalf("after a restart the node cannot reconnect: %v", err)
	}
	if _, err := readBlock(nc); err != nil {
		t.Errorf("after a restart: %v", err)
	}
}

// TestImpersonationNoDHCPNetns is the same attack when another server
// (dnsmasq) sends the boot answer: the evidence is the neighbour table
// and the node's configured MAC.
func TestImpersonationNoDHCPNetns(t *testing.T) {
	l := newLAN(t)
	l.start(t, helperConfig{MAC: nodeMAC})
	if _, err := tftpFrom(t, l.evil, "1234abcd/config.txt"); err == nil {
		t.Error("another MAC got the node's config.txt")
	}
	if _, err := tftpFrom(t, l.node, "1234abcd/config.txt"); err != nil {
		t.Fatalf("the node's own config.txt: %v", err)
	}
	if c, err := nbdFrom(t, l.evil); err == nil {
		c.Close()
		t.Error("another host got the node's disk")
	}
	nc, err := nbdFrom(t, l.node)
	if err != nil {
		t.Fatalf("the node cannot attach its disk: %v", err)
	}
	if _, err := readBlock(nc); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(l.log(t), "possible impersonation") {
		t.Error("no impersonation logged")
	}
}

// TestFloodNetns is the memory attack of issue #9 section 2 on TFTP: a
// host (here a node of the cluster, k6, so that its requests pass the
// binding) opens 500 transfers of a 24 MiB kernel and never acknowledges
// a block. The server must stay below 100 MB resident, and k5 must boot
// (fetch its kernel) during the flood.
func TestFloodNetns(t *testing.T) {
	l := newLAN(t)
	kernel := bytes.Repeat([]byte("kernel8 "), 3<<20) // 24 MiB
	img := filepath.Join(l.dir, "out", "k5.img")
	writeFAT(t, img, "kernel8.img", string(kernel))
	fixture.Run(t, "cp", "--sparse=always", img, filepath.Join(l.dir, "out", "k6.img"))
	srv := l.start(t, helperConfig{DHCP: "br0", K6: true})
	if err := piDHCP(t, l.evil, "e0", evilMAC, 0x5678abcd); err != nil {
		t.Fatal(err)
	}
	if _, err := tftpFrom(t, l.evil, "5678abcd/config.txt"); err != nil {
		t.Fatalf("k6 boots: %v", err)
	}
	base := srv.rss(t)

	const flood = 500
	var socks []net.PacketConn
	if err := l.evil.Do(func() error {
		for range flood {
			c, err := net.ListenPacket("udp4", evilIP+":0")
			if err != nil {
				return err
			}
			socks = append(socks, c)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range socks {
			c.Close()
		}
	}()
	to := &net.UDPAddr{IP: net.ParseIP(srvIP), Port: 69}
	rrq := append([]byte{0, 1}, "5678abcd/kernel8.img\x00octet\x00blksize\x001468\x00"...)
	for _, c := range socks {
		if _, err := c.WriteTo(rrq, to); err != nil {
			t.Fatal(err)
		}
	}
	peak := base
	stop := make(chan bool)
	sampled := make(chan int64)
	go func() {
		p := base
		for {
			select {
			case <-stop:
				sampled <- p
				return
			case <-time.After(20 * time.Millisecond):
				p = max(p, srv.rss(t))
			}
		}
	}()
	// k5 boots during the flood.
	if err := piDHCP(t, l.node, "n0", nodeMAC, 0x1234abcd); err != nil {
		t.Fatal(err)
	}
	got, err := tftpFrom(t, l.node, "1234abcd/kernel8.img")
	if err != nil || !bytes.Equal(got, kernel) {
		t.Errorf("k5 during the flood: %d bytes, %v", len(got), err)
	}
	time.Sleep(time.Second)
	close(stop)
	peak = <-sampled
	t.Logf("server RSS: %d MB before the flood, %d MB peak during it (%d requests for a %d MiB file)", base>>20, peak>>20, flood, len(kernel)>>20)
	if peak > 100<<20 {
		t.Errorf("server RSS reached %d MB under the flood, want below 100 MB", peak>>20)
	}
	if busy := strings.Count(l.log(t), "too many transfers"); busy == 0 || busy > 5 {
		t.Errorf("%d busy lines logged for %d refused requests, want a few", busy, flood-4)
	}
}

// TestNBDFloodNetns is the NBD half of issue #9 section 2: another host
// opens 3,000 connections, sends most of a 64 KiB option on each and never
// finishes a handshake (12,000 of them took 1.77 GB). The server must
// stay below 100 MB resident and the node must get its disk meanwhile.
func TestNBDFloodNetns(t *testing.T) {
	l := newLAN(t)
	srv := l.start(t, helperConfig{DHCP: "br0"})
	if err := piDHCP(t, l.node, "n0", nodeMAC, 0x1234abcd); err != nil {
		t.Fatal(err)
	}
	if _, err := tftpFrom(t, l.node, "1234abcd/config.txt"); err != nil {
		t.Fatal(err)
	}
	base := srv.rss(t)
	const flood = 3000
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	peak := base
	// Each connection sends the client flags and most of an option that
	// announces 64 KiB of data, then stalls: what makes a server hold
	// buffers for it.
	stall := binary.BigEndian.AppendUint32(nil, 3)
	stall = binary.BigEndian.AppendUint64(stall, 0x49484156454f5054) // IHAVEOPT
	stall = binary.BigEndian.AppendUint32(stall, 7)                  // NBD_OPT_GO
	stall = binary.BigEndian.AppendUint32(stall, 64<<10)
	stall = append(stall, make([]byte, 60<<10)...)
	if err := l.evil.Do(func() error {
		d := net.Dialer{Timeout: 5 * time.Second}
		for i := range flood {
			c, err := d.Dial("tcp4", srvIP+":10809")
			if err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
			conns = append(conns, c)
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write(stall) // refused connections are closed: errors are expected
			if i%500 == 0 {
				peak = max(peak, srv.rss(t))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	nc, err := nbdFrom(t, l.node)
	if err != nil {
		t.Fatalf("the node cannot attach its disk during the flood: %v", err)
	}
	if _, err := readBlock(nc); err != nil {
		t.Fatal(err)
	}
	peak = max(peak, srv.rss(t))
	t.Logf("server RSS: %d MB before, %d MB peak with %d half-open connections", base>>20, peak>>20, flood)
	if peak > 100<<20 {
		t.Errorf("server RSS reached %d MB, want below 100 MB", peak>>20)
	}
	if n := strings.Count(l.log(t), "too many handshakes"); n == 0 || n > 5 {
		t.Errorf("%d lines logged for %d refused connections, want a few", n, flood)
	}
}

// TestDHCPFloodNetns is the DHCP part of issue #9 section 2: 5,000
// requests from made-up Pis cost a few log lines, not thousands, and a
// request naming another host as its relay (giaddr) gets no reply sent to
// that host.
func TestDHCPFloodNetns(t *testing.T) {
	l := newLAN(t)
	l.start(t, helperConfig{DHCP: "br0"})
	var relayPort net.PacketConn
	if err := l.node.Do(func() (err error) { relayPort, err = net.ListenPacket("udp4", nodeIP+":67"); return err }); err != nil {
		t.Fatal(err)
	}
	defer relayPort.Close()
	var c net.PacketConn
	if err := l.evil.Do(func() (err error) { c, err = dhcp.Listen(context.Background(), "e0", ":68"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	const flood = 5000
	for i := range flood {
		mac := net.HardwareAddr{0xdc, 0xa6, 0x32, byte(i >> 16), byte(i >> 8), byte(i)}
		c.WriteTo(pi4Discover(t, mac, 0xff000000+uint32(i)).ToBytes(), bcast)
		if i%200 == 0 {
			time.Sleep(5 * time.Millisecond) // keep within the socket buffers
		}
	}
	relayed := pi4Discover(t, net.HardwareAddr{2, 0, 0, 0, 0, 0x66}, 0x1234abcd)
	relayed.GatewayIPAddr = net.ParseIP(nodeIP).To4()
	c.WriteTo(relayed.ToBytes(), bcast)
	relayPort.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, from, err := relayPort.ReadFrom(make([]byte, 1500)); err == nil {
		t.Errorf("the server sent a reply to the spoofed relay address (from %v)", from)
	}
	log := l.log(t)
	if n := strings.Count(log, "not answering a Pi"); n == 0 || n > 21 {
		t.Errorf("%d log lines for %d requests from unknown Pis, want at most 21", n, flood)
	}
	// The node still boots.
	if err := piDHCP(t, l.node, "n0", nodeMAC, 0x1234abcd); err != nil {
		t.Errorf("the node after the flood: %v", err)
	}
}
