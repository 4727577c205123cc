// Package binding decides which network address may use which node's
// disk: it binds a node's NBD export to one address per boot session, from
// evidence that belongs together, and refuses everyone else.
//
// A Raspberry Pi proves nothing about itself on the boot network: its
// serial is broadcast in its DHCP request and its MAC can be copied. What
// a server can check is that the pieces of one boot fit together:
//
//  1. a DHCP exchange: the Pi bootloader's DISCOVER or REQUEST for a node,
//     from MAC m (Table.DHCP; only when this server answers DHCP);
//  2. a TFTP request for the node's files from address a, where the
//     kernel's neighbour table maps a to m (and to the node's configured
//     MAC, if it has one), within Window of the DHCP exchange
//     (Table.AllowTFTP, then Table.BindTFTP once the file was found);
//  3. an NBD connection from a, still mapped to m, for the node's export
//     (Table.ConnectNBD).
//
// The binding (a, m) lasts until a new boot session replaces it. A session
// is live while its export is connected and for Window after its last
// TFTP request or disconnect; a live session is never replaced by another
// address or MAC: such a request is refused and logged as a possible
// impersonation with both addresses and MACs, and the node keeps its disk.
//
// How a node legitimately binds again:
//   - it reboots with the same address and MAC: its requests match the
//     binding and are served at once, live or not;
//   - it reboots with a new address (same MAC): a new DHCP exchange from
//     its MAC, then TFTP from the new address, rebinds as soon as its old
//     NBD connection is gone (the server notices a dead connection within
//     about 30 s);
//   - a different MAC (another Pi posing as the node, or a replaced board
//     for a node with no configured MAC) binds only when the session is not
//     live: no NBD connection and Window passed since the last request.
//
// Only a binding whose NBD connection was accepted is saved (in
// <StateDir>/<node>/binding), so that a restarted server lets the running
// node reconnect: after a restart the saved binding counts as live for
// Window. A single packet never changes what is saved.
//
// Without DHCP evidence (this server does not answer DHCP: dnsmasq or a
// router sends the boot answer), step 1 is skipped: a TFTP request binds
// when its address's neighbour entry names the node's configured MAC, or
// any MAC for a node configured with a serial only. Live sessions are
// protected the same way.
package binding

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/imgbake/imgbake/internal/tempfile"
	"github.com/imgbake/imgbake/netboot"
)

// DefaultWindow is the boot window: how long a DHCP exchange counts as
// evidence for the TFTP requests that follow, and how long a session stays
// live after its last request or disconnect. A Pi goes from its DHCP
// request to the kernel's NBD connection in well under a minute; QEMU
// under load takes a few.
const DefaultWindow = 5 * time.Minute

// ErrRefused is wrapped by every refusal. Its text is safe to send to the
// client: it names no node, address or MAC.
var ErrRefused = errors.New("not available to this client")

// Neighbors maps an IPv4 address on the local link to its MAC, as the
// kernel's neighbour (ARP) table has it. See ARPTable.
type Neighbors interface {
	MAC(a netip.Addr) (net.HardwareAddr, bool)
}

// NeighborsFunc adapts a function to Neighbors.
type NeighborsFunc func(a netip.Addr) (net.HardwareAddr, bool)

// MAC calls f.
func (f NeighborsFunc) MAC(a netip.Addr) (net.HardwareAddr, bool) { return f(a) }

// Node is a node the table binds: its name and, when configured, its MAC.
type Node struct {
	Name string
	// MAC, when not nil, is the only MAC the node may boot from.
	MAC net.HardwareAddr
}

// Table holds the boot sessions of all nodes. Its methods are safe for
// concurrent use.
type Table struct {
	// Neighbors is the neighbour table of the nodes' network. Required.
	Neighbors Neighbors
	// RequireDHCP says that this server answers the Pis' DHCP requests, so a
	// TFTP request must follow a DHCP exchange (see Table.DHCP).
	RequireDHCP bool
	// Window is the boot window (DefaultWindow if 0).
	Window time.Duration
	// StateDir, when not empty, keeps accepted bindings across restarts
	// in StateDir/<node>/binding.
	StateDir string
	// Log receives bindings (info), refusals (warn) and conflicts (error).
	// Nil means silent.
	Log *slog.Logger
	// Now returns the time (time.Now if nil); tests set it.
	Now func() time.Time

	mu    sync.Mutex
	nodes map[string]*session
	lines netboot.LogLimit
}

// session is what the table knows of one node.
type session struct {
	loaded bool
	// dhcp holds the node's recent DHCP exchanges: when each MAC asked.
	dhcp map[string]time.Time
	// bound is the address and MAC the export is bound to; zero if none.
	addr      netip.Addr
	mac       net.HardwareAddr
	boundAt   time.Time
	last      time.Time // last TFTP request, disconnect or restore
	connected int       // NBD connections in use
}

func (t *Table) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

func (t *Table) window() time.Duration {
	if t.Window > 0 {
		return t.Window
	}
	return DefaultWindow
}

func (t *Table) log() *slog.Logger {
	if t.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return t.Log
}

// get returns n's session, loading a saved binding the first time; t.mu
// is held.
func (t *Table) get(name string) *session {
	if t.nodes == nil {
		t.nodes = map[string]*session{}
	}
	s := t.nodes[name]
	if s == nil {
		s = &session{}
		t.nodes[name] = s
	}
	if !s.loaded {
		s.loaded = true
		if a, mac, ok := t.load(name); ok {
			s.addr, s.mac, s.boundAt, s.last = a, mac, t.now(), t.now()
		}
	}
	return s
}

// DHCP records that the Pi bootloader of node n sent a DHCP request from
// mac (and was answered): the start of a boot session. Call it only for a
// request that names n by its configured MAC or by the serial in option 97.
func (t *Table) DHCP(n Node, mac net.HardwareAddr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.get(n.Name)
	now := t.now()
	if s.dhcp == nil {
		s.dhcp = map[string]time.Time{}
	}
	for m, at := range s.dhcp {
		if now.Sub(at) > t.window() {
			delete(s.dhcp, m)
		}
	}
	if _, ok := s.dhcp[mac.String()]; ok || len(s.dhcp) < maxExchanges {
		s.dhcp[mac.String()] = now
	}
}

// maxExchanges bounds the DHCP exchanges remembered per node: a flood of
// requests naming a node from made-up MACs cannot grow memory, nor push
// out the real Pi's exchange once it is remembered.
const maxExchanges = 16

// AllowTFTP reports whether from may fetch n's boot files now. It changes
// nothing: call BindTFTP once the requested file was found. The error
// wraps ErrRefused.
func (t *Table) AllowTFTP(n Node, from netip.Addr) error {
	_, err := t.decide(n, from, false)
	return err
}

// BindTFTP is AllowTFTP for a request whose file n has: it binds n's
// export to from (and its MAC) if it was not already. The error wraps
// ErrRefused.
func (t *Table) BindTFTP(n Node, from netip.Addr) error {
	_, err := t.decide(n, from, true)
	return err
}

func (t *Table) decide(n Node, from netip.Addr, commit bool) (net.HardwareAddr, error) {
	from = from.Unmap()
	mac, ok := t.Neighbors.MAC(from)
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.get(n.Name)
	log := t.log().With("node", n.Name, "client", from)
	if !ok {
		t.refusal(log, slog.LevelWarn, n, from, "netboot: refusing a boot request from an address with no neighbour entry (not on the nodes' link?)")
		return nil, fmt.Errorf("%w: no neighbour entry for %v", ErrRefused, from)
	}
	log = log.With("mac", mac.String())
	if n.MAC != nil && !bytes.Equal(mac, n.MAC) {
		t.refusal(log, slog.LevelError, n, from, "netboot: possible impersonation: a boot request for the node comes from a MAC that is not the node's; refusing",
			"node_mac", n.MAC.String())
		return nil, fmt.Errorf("%w: MAC %v is not the node's", ErrRefused, mac)
	}
	now := t.now()
	if s.addr == from && bytes.Equal(s.mac, mac) {
		if commit {
			s.last = now
		}
		return mac, nil // the bound node itself, booting again or still booting
	}
	dhcpAt, exchanged := s.dhcp[mac.String()]
	if t.RequireDHCP && (!exchanged || now.Sub(dhcpAt) > t.window()) {
		t.refusal(log, slog.LevelWarn, n, from, "netboot: refusing a boot request that follows no DHCP exchange of the node from its MAC")
		return nil, fmt.Errorf("%w: no DHCP exchange from %v", ErrRefused, mac)
	}
	if s.addr.IsValid() {
		sameMAC := bytes.Equal(s.mac, mac)
		rebooted := sameMAC && t.RequireDHCP && exchanged && dhcpAt.After(s.boundAt)
		live := s.connected > 0 || now.Sub(s.last) <= t.window()
		if s.connected > 0 || (live && !rebooted && !(sameMAC && !t.RequireDHCP)) {
			t.refusal(log, slog.LevelError, n, from, "netboot: possible impersonation: a second address asks for the files of a node whose boot session is live; "+
				"refusing it, the node keeps its disk (if the node really moved, it binds again once its old session ends)",
				"bound_address", s.addr, "bound_mac", s.mac.String(), "nbd_connected", s.connected > 0)
			return nil, fmt.Errorf("%w: the node's session is live", ErrRefused)
		}
	}
	if commit {
		if s.addr.IsValid() {
			log.Info("netboot: node binds to a new address", "old_address", s.addr, "old_mac", s.mac.String())
		} else {
			log.Info("netboot: node is booting")
		}
		s.addr, s.mac, s.boundAt, s.last = from, mac, now, now
	}
	return mac, nil
}

// refusal logs a refused request, at most once a minute per node, client
// and message (see netboot.LogLimit): a flood of requests is not a flood of
// lines.
func (t *Table) refusal(log *slog.Logger, level slog.Level, n Node, from netip.Addr, msg string, args ...any) {
	ok, dropped := t.lines.Allow(n.Name + " " + from.String() + " " + msg)
	if !ok {
		return
	}
	if dropped > 0 {
		args = append(args, "dropped_lines", dropped)
	}
	log.Log(context.Background(), level, msg, args...)
}

// Bound returns the node bound to address a, for requests that name no
// node (the Pi 3B ROM's, or a fixed TFTP prefix).
func (t *Table) Bound(a netip.Addr) (string, bool) {
	a = a.Unmap()
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, s := range t.nodes {
		if s.addr == a {
			return name, true
		}
	}
	return "", false
}

// Restore loads the saved bindings of nodes, so that Bound knows them
// after a restart before their first request.
func (t *Table) Restore(nodes []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range nodes {
		t.get(n)
	}
}

// AllowNBD reports whether an NBD client from address from may use n's
// export: only the bound address, with its MAC still in the neighbour
// table. It changes nothing; ConnectNBD claims the export. The error
// wraps ErrRefused.
func (t *Table) AllowNBD(n Node, from netip.Addr) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, err := t.checkNBD(n, from)
	return err
}

// ConnectNBD is AllowNBD for a client that starts using n's export: the
// session is live until done is called, when the connection ends. The
// binding is saved for a restarted server.
func (t *Table) ConnectNBD(n Node, from netip.Addr) (done func(), err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, err := t.checkNBD(n, from)
	if err != nil {
		return nil, err
	}
	s.connected++
	if s.connected == 1 {
		t.save(n.Name, s.addr, s.mac)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			s.connected--
			s.last = t.now()
		})
	}, nil
}

// checkNBD is AllowNBD with t.mu held.
func (t *Table) checkNBD(n Node, from netip.Addr) (*session, error) {
	from = from.Unmap()
	mac, ok := t.Neighbors.MAC(from)
	s := t.get(n.Name)
	log := t.log().With("node", n.Name, "client", from, "mac", mac.String())
	switch {
	case !s.addr.IsValid():
		t.refusal(log, slog.LevelWarn, n, from, "netboot: refusing the node's disk: the node has not booted (no TFTP request bound it)")
		return nil, fmt.Errorf("%w: not bound", ErrRefused)
	case s.addr != from || !ok || !bytes.Equal(mac, s.mac):
		t.refusal(log, slog.LevelError, n, from, "netboot: possible impersonation: refusing the node's disk to an address or MAC it is not bound to",
			"bound_address", s.addr, "bound_mac", s.mac.String())
		return nil, fmt.Errorf("%w: bound elsewhere", ErrRefused)
	}
	return s, nil
}

// bindingFile is the saved binding of a node, in its state directory.
const bindingFile = "binding"

// legacyAddressFile is what imgbake before bindings saved: an address
// learned from any TFTP request. It is not trusted and is removed.
const legacyAddressFile = "address"

func (t *Table) save(name string, a netip.Addr, mac net.HardwareAddr) {
	if t.StateDir == "" {
		return
	}
	p := filepath.Join(t.StateDir, name, bindingFile)
	err := os.MkdirAll(filepath.Dir(p), 0o700)
	if err == nil {
		err = tempfile.WriteFile(p, []byte(a.String()+" "+mac.String()+"\n"), 0o600)
	}
	if err != nil {
		t.log().Warn("netboot: saving the node's binding; after a restart of the server the node must boot again", "node", name, "err", err)
	}
}

func (t *Table) load(name string) (netip.Addr, net.HardwareAddr, bool) {
	if t.StateDir == "" {
		return netip.Addr{}, nil, false
	}
	dir := filepath.Join(t.StateDir, name)
	// Copies of the binding a killed server was writing: named by
	// tempfile, or by an older imgbake binding.tmp.
	tempfile.RemoveStale(dir, t.log())
	os.Remove(filepath.Join(dir, bindingFile+".tmp"))
	if err := os.Remove(filepath.Join(dir, legacyAddressFile)); err == nil {
		t.log().Info("netboot: removed an address saved by an older imgbake (not trusted); if the node runs, boot it again", "node", name)
	}
	data, err := os.ReadFile(filepath.Join(dir, bindingFile))
	if err != nil {
		return netip.Addr{}, nil, false
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return netip.Addr{}, nil, false
	}
	a, err1 := netip.ParseAddr(f[0])
	mac, err2 := net.ParseMAC(f[1])
	if err1 != nil || err2 != nil || !a.Is4() {
		return netip.Addr{}, nil, false
	}
	return a, mac, true
}
