package binding

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ifixture "github.com/imgbake/imgbake/internal/fixture"
)

var (
	nodeMAC  = net.HardwareAddr{0xdc, 0xa6, 0x32, 1, 2, 3}
	otherMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x66}
	nodeIP   = netip.MustParseAddr("10.0.0.2")
	nodeIP2  = netip.MustParseAddr("10.0.0.12")
	evilIP   = netip.MustParseAddr("10.0.0.66")
)

// fixture is a Table with a neighbour table and a clock the test sets.
type fixture struct {
	*Table
	neigh map[netip.Addr]net.HardwareAddr
	now   time.Time
	log   bytes.Buffer
}

func newFixture(t *testing.T, dhcp bool, dir string) *fixture {
	f := &fixture{neigh: map[netip.Addr]net.HardwareAddr{nodeIP: nodeMAC, nodeIP2: nodeMAC, evilIP: otherMAC}, now: time.Unix(1e9, 0)}
	f.Table = &Table{
		Neighbors:   NeighborsFunc(func(a netip.Addr) (net.HardwareAddr, bool) { m, ok := f.neigh[a]; return m, ok }),
		RequireDHCP: dhcp,
		StateDir:    dir,
		Log:         slog.New(slog.NewTextHandler(&f.log, nil)),
		Now:         func() time.Time { return f.now },
	}
	return f
}

// boot runs a node's boot: DHCP from its MAC, a TFTP request, NBD.
func (f *fixture) boot(t *testing.T, n Node, from netip.Addr) (done func()) {
	t.Helper()
	f.DHCP(n, f.neigh[from])
	if err := f.AllowTFTP(n, from); err != nil {
		t.Fatalf("AllowTFTP(%v): %v", from, err)
	}
	if err := f.BindTFTP(n, from); err != nil {
		t.Fatalf("BindTFTP(%v): %v", from, err)
	}
	done, err := f.ConnectNBD(n, from)
	if err != nil {
		t.Fatalf("ConnectNBD(%v): %v", from, err)
	}
	return done
}

func refused(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrRefused) {
		t.Errorf("%s: %v, want a refusal", what, err)
	}
}

func TestLoneRequestDoesNotBind(t *testing.T) {
	f := newFixture(t, true, t.TempDir())
	k5 := Node{Name: "k5"}
	refused(t, "TFTP with no DHCP exchange", f.BindTFTP(k5, evilIP))
	_, err := f.ConnectNBD(k5, evilIP)
	refused(t, "NBD of a node that never booted", err)
	// A DHCP exchange from another MAC is no evidence for this address.
	f.DHCP(k5, nodeMAC)
	refused(t, "TFTP from a MAC with no DHCP exchange", f.BindTFTP(k5, evilIP))
	refused(t, "TFTP from an address with no neighbour entry", f.BindTFTP(k5, netip.MustParseAddr("10.0.0.99")))
	// An old exchange is no evidence either.
	f.DHCP(k5, otherMAC)
	f.now = f.now.Add(DefaultWindow + time.Second)
	refused(t, "TFTP after the boot window", f.BindTFTP(k5, evilIP))
	if _, ok := f.Bound(evilIP); ok {
		t.Error("a refused address is bound")
	}
}

func TestLiveSessionKeepsItsDisk(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, true, dir)
	k5 := Node{Name: "k5"} // a serial only: any MAC may claim it
	f.boot(t, k5, nodeIP)

	// Another Pi poses as k5: it sends a DHCP request with k5's serial,
	// then asks for k5's files.
	f.DHCP(k5, otherMAC)
	refused(t, "TFTP from a second address while the node runs", f.AllowTFTP(k5, evilIP))
	refused(t, "BindTFTP from a second address while the node runs", f.BindTFTP(k5, evilIP))
	_, err := f.ConnectNBD(k5, evilIP)
	refused(t, "NBD from a second address", err)
	for _, s := range []string{"possible impersonation", evilIP.String(), nodeIP.String(), otherMAC.String(), nodeMAC.String()} {
		if !strings.Contains(f.log.String(), s) {
			t.Errorf("log lacks %q:\n%s", s, f.log.String())
		}
	}
	if name, ok := f.Bound(nodeIP); !ok || name != "k5" {
		t.Errorf("Bound(node) = %q, %v", name, ok)
	}
	// Still refused after the window: the NBD connection keeps it live.
	f.now = f.now.Add(time.Hour)
	f.DHCP(k5, otherMAC)
	refused(t, "TFTP from a second address an hour later", f.BindTFTP(k5, evilIP))
	if err := f.AllowNBD(k5, nodeIP); err != nil {
		t.Errorf("the node itself: %v", err)
	}
	// A node with a configured MAC is refused to any other MAC, live or not.
	k6 := Node{Name: "k6", MAC: nodeMAC}
	f.DHCP(k6, otherMAC)
	refused(t, "TFTP for a node from another MAC", f.BindTFTP(k6, evilIP))
}

func TestRebind(t *testing.T) {
	dir := t.TempDir()
	f := newFixture(t, true, dir)
	k5 := Node{Name: "k5", MAC: nodeMAC}
	done := f.boot(t, k5, nodeIP)

	// The node reboots with the same address: served at once, even while
	// its old NBD connection has not been noticed dead yet.
	if err := f.BindTFTP(k5, nodeIP); err != nil {
		t.Errorf("reboot, same address: %v", err)
	}
	// It reboots with a new address: refused while its old connection is
	// up, bound once it is gone.
	f.now = f.now.Add(10 * time.Second)
	f.DHCP(k5, nodeMAC)
	refused(t, "new address while connected", f.BindTFTP(k5, nodeIP2))
	// The server notices the dead connection after the node's DHCP
	// request (keepalive): that exchange still counts.
	f.now = f.now.Add(30 * time.Second)
	done()
	done() // idempotent
	if err := f.BindTFTP(k5, nodeIP2); err != nil {
		t.Fatalf("reboot, new address: %v", err)
	}
	if _, err := f.ConnectNBD(k5, nodeIP); err == nil {
		t.Error("the old address still gets the disk")
	}
	done = f.boot(t, k5, nodeIP2)
	done()

	// A serial-only node: another MAC binds only once the session is over
	// (the limit of what the network proves; see the package comment).
	k7 := Node{Name: "k7"}
	done = f.boot(t, k7, nodeIP)
	done()
	f.DHCP(k7, otherMAC)
	refused(t, "another MAC within the window", f.BindTFTP(k7, evilIP))
	f.now = f.now.Add(DefaultWindow + time.Second)
	f.DHCP(k7, otherMAC)
	if err := f.BindTFTP(k7, evilIP); err != nil {
		t.Errorf("another MAC after the session ended: %v", err)
	}
}

func TestRestart(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "k5"), 0o755)
	// What an older imgbake saved from any TFTP request is not trusted.
	os.WriteFile(filepath.Join(dir, "k5", "address"), []byte(evilIP.String()+"\n"), 0o644)
	f := newFixture(t, true, dir)
	k5 := Node{Name: "k5"}
	f.DHCP(k5, nodeMAC)
	if err := f.BindTFTP(k5, nodeIP); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "k5", "address")); err == nil {
		t.Error("the legacy address file is still there")
	}
	if _, err := os.Stat(filepath.Join(dir, "k5", bindingFile)); err == nil {
		t.Error("a binding from TFTP alone was saved")
	}
	f.ConnectNBD(k5, nodeIP)
	b, _ := os.ReadFile(filepath.Join(dir, "k5", bindingFile))
	if string(b) != nodeIP.String()+" "+nodeMAC.String()+"\n" {
		t.Errorf("saved binding %q", b)
	}

	// A restarted server: the running node reconnects, nobody else does.
	g := newFixture(t, true, dir)
	g.Restore([]string{"k5"})
	if name, ok := g.Bound(nodeIP); !ok || name != "k5" {
		t.Errorf("after restart Bound = %q, %v", name, ok)
	}
	if _, err := g.ConnectNBD(k5, evilIP); err == nil {
		t.Error("after restart: another address gets the disk")
	}
	g.neigh[nodeIP] = otherMAC
	if _, err := g.ConnectNBD(k5, nodeIP); err == nil {
		t.Error("after restart: the node's address with another MAC gets the disk")
	}
	g.neigh[nodeIP] = nodeMAC
	if _, err := g.ConnectNBD(k5, nodeIP); err != nil {
		t.Errorf("after restart the node cannot reconnect: %v", err)
	}
}

func TestWithoutDHCP(t *testing.T) {
	f := newFixture(t, false, "")
	k5 := Node{Name: "k5", MAC: nodeMAC}
	refused(t, "another MAC", f.BindTFTP(k5, evilIP))
	if err := f.BindTFTP(k5, nodeIP); err != nil {
		t.Fatalf("the node's MAC: %v", err)
	}
	k7 := Node{Name: "k7"}
	done := f.boot(t, k7, nodeIP)
	refused(t, "a second address while live", f.BindTFTP(k7, evilIP))
	done()
	// Same MAC, new address, not connected: a reboot.
	if err := f.BindTFTP(k7, nodeIP2); err != nil {
		t.Errorf("reboot with a new address: %v", err)
	}
}

func TestParseARP(t *testing.T) {
	const table = `IP address       HW type     Flags       HW address            Mask     Device
10.0.0.9         0x1         0x0         00:00:00:00:00:00     *        br0
10.0.0.2         0x1         0x2         dc:a6:32:01:02:03     *        br0
10.0.0.22        0x1         0x6         02:00:00:00:00:66     *        br0
`
	for _, c := range []struct {
		a    string
		want string
	}{{"10.0.0.2", "dc:a6:32:01:02:03"}, {"10.0.0.22", "02:00:00:00:00:66"}, {"10.0.0.9", ""}, {"10.0.0.20", ""}} {
		mac, ok := parseARP(strings.NewReader(table), netip.MustParseAddr(c.a))
		if got := mac.String(); ok != (c.want != "") || got != c.want {
			t.Errorf("%s: %q %v, want %q", c.a, got, ok, c.want)
		}
	}
	// The real table of this machine reads without error.
	arp, err := OpenARP()
	if err != nil {
		t.Skip(err)
	}
	defer arp.Close()
	arp.MAC(netip.MustParseAddr("127.0.0.1"))
	arp.MAC(netip.MustParseAddr("127.0.0.1"))
}

// TestStaleBindingTemps: a restarted server removes the temporary copies
// of a binding that a killed server left (and the fixed-name one an older
// imgbake wrote), keeps a running imgbake's, and saves a binding 0600 with
// nothing beside it.
func TestStaleBindingTemps(t *testing.T) {
	dir := t.TempDir()
	node := filepath.Join(dir, "k5")
	os.MkdirAll(node, 0o700)
	stale, live := ifixture.LeftTemps(t, filepath.Join(node, bindingFile), []byte(evilIP.String()+" "+otherMAC.String()+"\n"))
	legacy := filepath.Join(node, bindingFile+".tmp")
	if err := os.WriteFile(legacy, []byte(evilIP.String()+" "+otherMAC.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, true, dir)
	f.Restore([]string{"k5"})
	for _, p := range []string{stale, legacy} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s was kept", filepath.Base(p))
		}
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a running imgbake's %s went: %v", filepath.Base(live), err)
	}
	os.Remove(live)
	f.boot(t, Node{Name: "k5"}, nodeIP)
	if fi, err := os.Stat(filepath.Join(node, bindingFile)); err != nil || fi.Mode() != 0o600 {
		t.Errorf("saved binding: %v, mode %v, want 0600", err, fi.Mode())
	}
	if ents, _ := os.ReadDir(node); len(ents) != 1 {
		t.Errorf("%s holds %d files, want the binding alone", node, len(ents))
	}
}
