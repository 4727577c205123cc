// Package serve runs `imgbake netboot`: it glues the DHCP, TFTP and NBD
// servers of the netboot packages to the nodes of the cluster file and
// their disks.
package serve

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/imgbake/imgbake/internal/tempfile"
	"github.com/imgbake/imgbake/netboot"
	"github.com/imgbake/imgbake/netboot/binding"
	"github.com/imgbake/imgbake/netboot/dhcp"
	"github.com/imgbake/imgbake/netboot/initramfs"
	"github.com/imgbake/imgbake/netboot/nbd"
	"github.com/imgbake/imgbake/netboot/node"
	"github.com/imgbake/imgbake/netboot/tftp"
)

// DefaultNBDPort is the IANA port of NBD.
const DefaultNBDPort = 10809

// Node is a network-booted node.
type Node struct {
	// Name is the node's name: its image is <image dir>/<Name>.img and its
	// NBD export is Name.
	Name string
	// Serial is the TFTP serial prefix; empty when unknown.
	Serial netboot.Serial
	// MAC is the Ethernet address; nil when unknown.
	MAC net.HardwareAddr
}

// Server boots Raspberry Pis from the network: the DHCP boot answer (proxy
// mode), boot files over TFTP straight out of each node's disk, with the
// network root added at serve time, and each node's disk over NBD.
type Server struct {
	// Nodes are the machines to boot. Required.
	Nodes []Node
	// Disks makes and finds the nodes' disks. Required.
	Disks *node.Store
	// Addr is this server's address on the nodes' network: the DHCP
	// answer's server and the NBD server in the kernel command line.
	Addr netip.Addr
	// NBDPort is the port in the kernel command line (DefaultNBDPort if 0).
	NBDPort uint16
	// Init returns the netboot /init for a node architecture (arm64,
	// armhf); nil means initramfs.Init, the programs built into imgbake.
	Init func(arch string) ([]byte, error)
	// Log receives what the servers do; nil means silent.
	Log *slog.Logger
	// Neighbors is the neighbour table of the nodes' network, the evidence
	// that binds a node's disk to the address it boots from (see package
	// binding); nil means the kernel's table of the network namespace
	// Serve is called in.
	Neighbors binding.Neighbors
	// Enroll, if not nil, is asked about a Pi that is not one of the
	// nodes: it returns the node the Pi is (enrolled now or earlier), or
	// an error, and the Pi is not answered. See package enroll.
	Enroll func(ctx context.Context, m dhcp.Machine) (Node, error)
	// Prepare, if not nil, builds the image of a node that has none
	// (<image dir>/<name>.img), in the background, ahead of its boot.
	Prepare func(ctx context.Context, name string) error

	bindings *binding.Table
	fleet    fleet
	ctx      context.Context // Serve's, for background builds
	mu       sync.Mutex
	disks    map[string]*openDisk // for NBD
	stale    []*os.File
	boots    map[string]*bootDisk // for TFTP
	lines    netboot.LogLimit     // for unknown Pis
}

// Listeners are the sockets Serve uses; the caller opens them (tests use
// loopback ports).
type Listeners struct {
	// DHCP is the proxyDHCP socket (port 67, see dhcp.Listen); nil runs no
	// DHCP (another server, such as dnsmasq, sends the boot answer).
	DHCP net.PacketConn
	// TFTP is the TFTP socket (port 69).
	TFTP net.PacketConn
	// NBD is the NBD listener (port 10809).
	NBD net.Listener
}

func (s *Server) logger() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// Serve runs the servers until ctx is cancelled or one fails. It closes
// the listeners. Stopping leaves running nodes running: their disks stay
// in the state directory and their NBD clients reconnect to the next
// server.
func (s *Server) Serve(ctx context.Context, l Listeners) error {
	if (len(s.Nodes) == 0 && s.Enroll == nil) || s.Disks == nil || l.TFTP == nil || l.NBD == nil {
		return errors.New("netboot: Nodes, Disks and the TFTP and NBD listeners are required")
	}
	if !s.Addr.Is4() {
		return fmt.Errorf("netboot: server address %v is not IPv4 (Pi bootloaders speak IPv4 only)", s.Addr)
	}
	defer s.closeDisks()
	log := s.logger()
	// status.json and pending.json a killed server was writing; the nodes'
	// directories are cleaned as their bindings are restored.
	tempfile.RemoveStale(s.Disks.StateDir, log)
	neigh := s.Neighbors
	if neigh == nil {
		arp, err := binding.OpenARP()
		if err != nil {
			return err
		}
		defer arp.Close()
		neigh = arp
	}
	s.bindings = &binding.Table{Neighbors: neigh, RequireDHCP: l.DHCP != nil, StateDir: s.Disks.StateDir, Log: log}
	s.bindings.Restore(s.names())
	g, ctx := errgroup.WithContext(ctx)
	s.ctx = ctx
	g.Go(func() error { s.writeStatus(ctx); return nil })
	if l.DHCP != nil {
		proxy := &dhcp.Proxy{Backend: dhcp.BackendFunc(s.lookupMachine), ServerIP: s.Addr, Log: log, Answered: s.dhcpAnswered}
		g.Go(func() error { return (&dhcp.Server{Handler: proxy, Log: log}).Serve(ctx, l.DHCP) })
	}
	g.Go(func() error {
		return (&tftp.Server{Resolver: tftp.ResolverFunc(s.resolve), Log: log}).Serve(ctx, l.TFTP)
	})
	g.Go(func() error { return (&nbd.Server{Backend: nbd.BackendFunc(s.export), Log: log}).Serve(ctx, l.NBD) })
	g.Go(func() error { s.prepareDisks(ctx); return nil })
	return g.Wait()
}

// prepareDisks makes the disks of nodes whose image exists ahead of their
// first boot: copying and growing takes longer than a bootloader waits
// for a TFTP answer.
func (s *Server) prepareDisks(ctx context.Context) {
	for _, n := range s.current() {
		if _, err := os.Stat(s.Disks.ImagePath(n.Name)); err != nil && s.Prepare != nil {
			s.startPrepare(n.Name)
			continue
		} else if err != nil {
			s.logger().Warn("netboot: no image for node yet; run `imgbake build "+n.Name+"`", "node", n.Name)
			continue
		}
		if _, created, err := s.Disks.Ensure(ctx, n.Name); err != nil {
			if ctx.Err() == nil {
				s.logger().Error("netboot: making disk", "node", n.Name, "err", err)
			}
		} else if created {
			s.logger().Info("netboot: disk ready", "node", n.Name, "disk", s.Disks.DiskPath(n.Name))
		}
	}
}

// lookupMachine is the DHCP backend: nodes by serial (Pi 4/5) or MAC.
func (s *Server) lookupMachine(ctx context.Context, m dhcp.Machine) (dhcp.Node, error) {
	for _, n := range s.current() {
		if (m.Serial != "" && n.Serial == m.Serial) || (n.MAC != nil && m.MAC.String() == n.MAC.String()) {
			return dhcp.Node{Name: n.Name}, nil
		}
	}
	if s.Enroll != nil && (m.PXE || m.Serial != "") {
		n, err := s.enrol(ctx, m)
		if err != nil {
			return dhcp.Node{}, fmt.Errorf("%w: %s: %w", dhcp.ErrUnknownMachine, m, err)
		}
		return dhcp.Node{Name: n.Name}, nil
	}
	return dhcp.Node{}, fmt.Errorf("%w: %s", dhcp.ErrUnknownMachine, m)
}

func (s *Server) byName(name string) (Node, bool) {
	for _, n := range s.current() {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

func (s *Server) names() []string {
	nodes := s.current()
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	return names
}

// dhcpAnswered records a node's DHCP exchange: the start of a boot session.
func (s *Server) dhcpAnswered(m dhcp.Machine, dn dhcp.Node) {
	if n, ok := s.byName(dn.Name); ok {
		s.bindings.DHCP(n.binding(), m.MAC)
		s.setStatus(n, func(st *NodeStatus) { st.DHCP = time.Now().UTC() })
	}
}

func (n Node) binding() binding.Node { return binding.Node{Name: n.Name, MAC: n.MAC} }

// openDisk is a node's disk file held open for NBD.
type openDisk struct {
	f   *os.File
	ino uint64
}

// export is the NBD backend: a node's own disk, served only to the address
// its boot session is bound to.
func (s *Server) export(_ context.Context, name string, client netip.Addr) (nbd.Export, error) {
	n, ok := s.byName(name)
	if !ok {
		return nbd.Export{}, fmt.Errorf("%w: %q is not a network-booted node", nbd.ErrUnknownExport, name)
	}
	if err := s.bindings.AllowNBD(n.binding(), client); err != nil {
		return nbd.Export{}, fmt.Errorf("%w: %w", nbd.ErrUnknownExport, err)
	}
	f, err := s.disk(name)
	if err != nil {
		return nbd.Export{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		return nbd.Export{}, fmt.Errorf("reading the disk of %s: %w", name, err)
	}
	claim := func() (func(), error) { return s.bindings.ConnectNBD(n.binding(), client) }
	return nbd.Export{Name: name, Disk: f, Size: fi.Size(), Client: client, Claim: s.attached(n, client, claim), Activity: s.activityOf(name)}, nil
}

// disk returns the open disk of name, reopening it when `netboot reset`
// replaced the file.
func (s *Server) disk(name string) (*os.File, error) {
	path := s.Disks.DiskPath(name)
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: no disk for %s yet (%v)", nbd.ErrUnknownExport, name, err)
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.disks[name]; ok && d.ino == ino {
		return d.f, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the disk of %s: %w", name, err)
	}
	if s.disks == nil {
		s.disks = map[string]*openDisk{}
	}
	if old, ok := s.disks[name]; ok {
		s.stale = append(s.stale, old.f) // a connection may still use it
	}
	s.disks[name] = &openDisk{f: f, ino: ino}
	return f, nil
}

func (s *Server) closeDisks() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.disks {
		d.f.Close()
	}
	for _, f := range s.stale {
		f.Close()
	}
	for _, d := range s.boots {
		d.refs-- // transfers have ended: Serve waited for them
		if d.refs == 0 {
			d.f.Close()
		}
	}
	s.disks, s.stale, s.boots = nil, nil, nil
}

func (s *Server) nbdServer() netip.AddrPort {
	return netip.AddrPortFrom(s.Addr, cmp.Or(s.NBDPort, DefaultNBDPort))
}

func (s *Server) initFor(arch string) ([]byte, error) {
	if s.Init != nil {
		return s.Init(arch)
	}
	return initramfs.Init(arch)
}
