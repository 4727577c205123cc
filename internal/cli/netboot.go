package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imgbake/imgbake/image"
	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/internal/progress"
	"github.com/imgbake/imgbake/netboot/dhcp"
	"github.com/imgbake/imgbake/netboot/enroll"
	"github.com/imgbake/imgbake/netboot/initramfs"
	"github.com/imgbake/imgbake/netboot/node"
	"github.com/imgbake/imgbake/netboot/serve"
	"github.com/spf13/cobra"
)

// defaultStateDir holds the nodes' disks, next to the cluster file.
const defaultStateDir = "netboot-state"

type netbootOptions struct {
	iface, address, stateDir, diskSize, out string
	noDHCP, printUnit                       bool
	tftpPort, nbdPort                       int
	// wait is how long to wait for the interface and its address.
	wait time.Duration
}

func (a *App) netbootCommand(g *globals) *cobra.Command {
	o := &netbootOptions{}
	cmd := &cobra.Command{
		Use:   "netboot --interface IFACE",
		Short: "Boot nodes over the network: DHCP proxy, TFTP and NBD (root disk)",
		Long: `netboot boots the cluster file's nodes that have a netboot: entry (serial
and/or MAC) over the network, with no SD card: it answers their bootloader's
DHCP request (proxyDHCP: your router keeps handing out addresses), serves
their boot files over TFTP and their root disk over NBD.

Each node gets its own disk, <state-dir>/NODE/disk.img: a copy of the image
'imgbake build' made (out/NODE.img), grown to --disk-size. It is made on the
first boot and kept across reboots, rebuilds of the image and restarts of
this server; 'imgbake netboot reset NODE' starts it again from the image.
The image is the same for SD cards and network boot: what network boot needs
(root on NBD in cmdline.txt, an initramfs that attaches it) is added as the
files are served, never written to the disk.

Pis not in the cluster file are not answered; their serial is logged, to be
copied into the cluster file. A node's disk is served only to the address and
MAC of its current boot (its DHCP exchange, then its TFTP requests from that
MAC); anyone who can pose as a Pi on the network can still get its disk, so use
a network of the nodes' own (see Security in README.md). Ports 67 and 69 need root (or
CAP_NET_BIND_SERVICE). Stopping the server does not stop running nodes:
their disk I/O waits until it runs again.`,
		Example: `  sudo imgbake netboot --interface eth0
  sudo imgbake netboot --interface eth0 --disk-size 32G --state-dir /srv/imgbake
  sudo imgbake netboot --interface eth0 --no-dhcp   # dnsmasq already sends the PXE answer
  imgbake netboot reset k5                          # power k5 off first`,
		Args: exactArgs(0, "no arguments (did you mean 'imgbake netboot reset NODE'?)"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runNetboot(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.iface, "interface", "i", "", "network interface on the nodes' network (required)")
	f.StringVar(&o.address, "address", "", "this server's IPv4 address on that network (default: the interface's first)")
	f.BoolVar(&o.noDHCP, "no-dhcp", false, "do not answer DHCP (another server sends the network boot answer)")
	f.IntVar(&o.tftpPort, "tftp-port", 69, "TFTP port (Pi bootloaders use 69)")
	f.IntVar(&o.nbdPort, "nbd-port", serve.DefaultNBDPort, "NBD port")
	f.DurationVar(&o.wait, "wait", 0, "wait this long for the interface and its address to appear (a service started at boot; the unit passes 2m)")
	f.BoolVar(&o.printUnit, "print-unit", false, "print a systemd unit that runs this command, for a Linux host that serves the nodes")
	addDiskFlags(f, o)
	cmd.AddCommand(a.netbootResetCommand(g), a.netbootPendingCommand(g), a.netbootApproveCommand(g), a.netbootStatusCommand(g))
	return cmd
}

type flagSet interface {
	StringVar(p *string, name, value, usage string)
	StringVarP(p *string, name, shorthand, value, usage string)
}

func addDiskFlags(f flagSet, o *netbootOptions) {
	f.StringVar(&o.stateDir, "state-dir", "", "directory of the nodes' disks (default: netboot-state next to the cluster file)")
	f.StringVar(&o.diskSize, "disk-size", "16G", "size a node's disk is grown to when it is made")
	f.StringVarP(&o.out, "out", "o", "", "directory of the built images (default: output-dir: in the cluster file, or out)")
}

func (a *App) netbootResetCommand(g *globals) *cobra.Command {
	o := &netbootOptions{}
	cmd := &cobra.Command{
		Use:   "reset NODE...",
		Short: "Throw a node's disk away and start again from its image",
		Long: `reset replaces a network-booted node's disk with a fresh copy of its image
(out/NODE.img, as last built), grown to --disk-size. Everything the node
wrote is lost. Power the node off first: a running node would keep writing
to the disk it has.`,
		Example: `  imgbake build k5 && imgbake netboot reset k5`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("name the node(s) whose disk to reset (imgbake netboot reset k5)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runNetbootReset(cmd.Context(), g, o, args)
		},
	}
	addDiskFlags(cmd.Flags(), o)
	cmd.ValidArgsFunction = func(_ *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		return clusterNodeNames(g, func(n *config.Node) bool { return n.Netboot != nil }), cobra.ShellCompDirectiveNoFileComp
	}
	return cmd
}

// netbootSetup is what both commands read from the cluster file.
func (a *App) netbootSetup(g *globals, o *netbootOptions, log *slog.Logger) (*config.Cluster, []serve.Node, *node.Store, error) {
	size, err := config.ParseSize(o.diskSize)
	if err != nil {
		return nil, nil, nil, usageError{fmt.Errorf("--disk-size: %w", err)}
	}
	if size != 0 && size < 1<<30 {
		return nil, nil, nil, usagef("--disk-size %s is too small: give at least 1G (e.g. --disk-size 16G)", o.diskSize)
	}
	c, err := a.loadCluster(g.config)
	if err != nil {
		return nil, nil, nil, err
	}
	nodes, err := netbootNodes(c)
	if err != nil {
		return nil, nil, nil, err
	}
	stateDir := firstNonEmpty(o.stateDir, c.Path(defaultStateDir))
	store := &node.Store{
		StateDir: a.expandHome(stateDir),
		ImageDir: a.expandHome(firstNonEmpty(o.out, c.Path(c.OutputDir))),
		DiskSize: size,
		Progress: a.Stderr,
		Log:      log,
	}
	return c, nodes, store, nil
}

// netbootNodes returns the nodes of c that boot from the network.
func netbootNodes(c *config.Cluster) ([]serve.Node, error) {
	var nodes []serve.Node
	for _, n := range c.Nodes {
		if n.Netboot == nil {
			continue
		}
		sn := serve.Node{Name: n.Name}
		var err error
		if sn.Serial, sn.MAC, err = n.Netboot.Identity(); err != nil {
			return nil, fmt.Errorf("node %s: %w", n.Name, err)
		}
		nodes = append(nodes, sn)
	}
	if len(nodes) == 0 && c.Enroll == nil {
		return nil, fmt.Errorf("no node in %s has a netboot: entry; add one to each node to boot from the network, e.g.\n"+
			"  - name: k5\n    netboot: {serial: 1234abcd}\n(the serial is the last 8 digits of `grep Serial /proc/cpuinfo`, or what 'imgbake netboot' logs for an unknown Pi), or add an enroll: policy", c.File)
	}
	return nodes, nil
}

func (a *App) serverLogger(g *globals) *slog.Logger {
	level := slog.LevelInfo
	if g.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(a.Stderr, &slog.HandlerOptions{Level: level}))
}

func (a *App) runNetboot(ctx context.Context, g *globals, o *netbootOptions) error {
	if o.printUnit {
		return a.printUnit(g, o)
	}
	if runtime.GOOS != "linux" {
		return errors.New("imgbake netboot runs on Linux only: run it on a Linux machine on the Pis' network")
	}
	if o.iface == "" {
		return usagef("name the network interface the Pis are on: imgbake netboot --interface eth0")
	}
	if o.tftpPort <= 0 || o.tftpPort > 65535 || o.nbdPort <= 0 || o.nbdPort > 65535 {
		return usagef("--tftp-port and --nbd-port must be between 1 and 65535")
	}
	log := a.serverLogger(g)
	c, nodes, store, err := a.netbootSetup(g, o, log)
	if err != nil {
		return err
	}
	addr, err := waitInterfaceAddr(ctx, o.iface, o.address, o.wait, log)
	if err != nil {
		return err
	}
	initFor := a.netbootInit()
	if _, err := initFor("arm64"); err != nil {
		return err // built without `go generate`: say how to build it
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	var l serve.Listeners
	defer func() {
		for _, c := range []interface{ Close() error }{l.DHCP, l.TFTP, l.NBD} {
			if c != nil {
				c.Close()
			}
		}
	}()
	if !o.noDHCP {
		if l.DHCP, err = dhcp.Listen(ctx, o.iface, ":67"); err != nil {
			return fmt.Errorf("%w (or pass --no-dhcp when another server sends the network boot answer)", err)
		}
	}
	tftpAddr := net.JoinHostPort(addr.String(), strconv.Itoa(o.tftpPort))
	if l.TFTP, err = net.ListenPacket("udp4", tftpAddr); err != nil {
		return fmt.Errorf("listening for TFTP on %s (port 69 needs root or CAP_NET_BIND_SERVICE, and no other TFTP server): %w", tftpAddr, err)
	}
	nbdAddr := net.JoinHostPort(addr.String(), strconv.Itoa(o.nbdPort))
	if l.NBD, err = net.Listen("tcp4", nbdAddr); err != nil {
		return fmt.Errorf("listening for NBD on %s (is another imgbake netboot running?): %w", nbdAddr, err)
	}
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	log.Info("netboot: serving", "interface", o.iface, "address", addr, "nodes", names, "state", store.StateDir, "dhcp", !o.noDHCP)
	if err := os.MkdirAll(store.StateDir, 0o700); err != nil {
		return fmt.Errorf("creating the state directory: %w", err)
	}
	var enroller atomic.Pointer[enroll.Enroller]
	enroller.Store(a.enroller(c, store, log))
	s := &serve.Server{Nodes: nodes, Disks: store, Addr: addr, NBDPort: uint16(o.nbdPort), Init: initFor, Log: log,
		Enroll:  serve.EnrollWith(enroller.Load),
		Prepare: a.netbootPrepare(g, store.ImageDir)}
	go a.watchCluster(ctx, g, o, s, &enroller, log)
	if c.Enroll != nil {
		go a.warmBase(ctx, c, log)
	}
	err = s.Serve(ctx, l)
	l = serve.Listeners{} // Serve closed them
	if err != nil {
		return err
	}
	log.Info("netboot: stopped; running nodes wait for the server to come back")
	return nil
}

// netbootPrepare returns how netboot builds a node's image into imageDir
// when the node first boots: as build does, from the cluster file (its
// base: and base-sha256:).
func (a *App) netbootPrepare(g *globals, imageDir string) func(ctx context.Context, name string) error {
	return func(ctx context.Context, name string) error {
		return a.runBuild(ctx, g, &buildOptions{out: imageDir}, []string{name})
	}
}

// netbootInit returns where the netboot /init programs come from: the
// ones built into imgbake, or init-arm64 and init-armhf in the directory
// $IMGBAKE_NETBOOT_INIT_DIR (a build of netboot/initrd of your own).
func (a *App) netbootInit() func(arch string) ([]byte, error) {
	dir := a.getenv("IMGBAKE_NETBOOT_INIT_DIR")
	if dir == "" {
		return initramfs.Init
	}
	return func(arch string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, "init-"+arch))
		if err != nil {
			return nil, fmt.Errorf("reading the netboot init from IMGBAKE_NETBOOT_INIT_DIR: %w", err)
		}
		return b, nil
	}
}

// waitInterfaceAddr is interfaceAddr, waiting up to wait for an interface
// that does not exist or has no (such) address yet: started at boot
// (imgbake-netboot.service), netboot may run before the driver or the
// network manager has set the interface up.
func waitInterfaceAddr(ctx context.Context, iface, want string, wait time.Duration, log *slog.Logger) (netip.Addr, error) {
	deadline := time.Now().Add(wait)
	for logged := false; ; logged = true {
		addr, err := interfaceAddr(iface, want)
		var na noAddrError
		if err == nil || !errors.As(err, &na) || time.Now().After(deadline) {
			return addr, err
		}
		if !logged {
			log.Info("netboot: waiting for the interface and its address", "interface", iface, "for", wait, "err", err)
		}
		select {
		case <-ctx.Done():
			return netip.Addr{}, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// noAddrError is an interface that is missing or has no (wanted) IPv4
// address, which may come.
type noAddrError struct{ err error }

func (e noAddrError) Error() string { return e.err.Error() }
func (e noAddrError) Unwrap() error { return e.err }

// interfaceAddr returns want (checked to be on iface) or iface's first
// IPv4 address.
func interfaceAddr(iface, want string) (netip.Addr, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return netip.Addr{}, noAddrError{usagef("--interface %s: %v (list interfaces with `ip -br addr`)", iface, err)}
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("reading the addresses of %s: %w", iface, err)
	}
	var w netip.Addr
	if want != "" {
		if w, err = netip.ParseAddr(want); err != nil || !w.Is4() {
			return netip.Addr{}, usagef("--address %q: give an IPv4 address of %s", want, iface)
		}
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP.To4())
		if !ok {
			continue
		}
		if !w.IsValid() || ip == w {
			return ip, nil
		}
	}
	if w.IsValid() {
		return netip.Addr{}, noAddrError{usagef("--address %s is not an address of %s", w, iface)}
	}
	return netip.Addr{}, noAddrError{fmt.Errorf("%s has no IPv4 address: give it one on the Pis' network (or pick another --interface)", iface)}
}

func (a *App) runNetbootReset(ctx context.Context, g *globals, o *netbootOptions, args []string) error {
	log := a.logger(g)
	c, nodes, store, err := a.netbootSetup(g, o, log)
	if err != nil {
		return err
	}
	for _, name := range args {
		found := false
		for _, n := range nodes {
			found = found || n.Name == name
		}
		if !found {
			if _, _, listed := c.Node(name); listed {
				return fmt.Errorf("%s has no netboot: entry in %s; add its serial (netboot: {serial: ...}) to boot it from the network", name, c.File)
			}
			return fmt.Errorf("no node %s in %s", name, c.File)
		}
	}
	for _, name := range args {
		if err := store.Reset(ctx, name); err != nil {
			if errors.Is(err, node.ErrNoImage) {
				return err
			}
			return fmt.Errorf("resetting %s: %w", name, err)
		}
		fi, err := os.Stat(store.DiskPath(name))
		if err != nil {
			return err
		}
		fmt.Fprintf(a.Stdout, "%s: new disk %s (%s) from %s; power the node on to boot it.\n", name,
			store.DiskPath(name), progress.Bytes(fi.Size()), filepath.Base(store.ImagePath(name)))
	}
	return nil
}

// warmBase prepares the cluster's base image (decompressed and checked,
// into the cache) ahead of the first Pi that enrols: decompressing a
// Raspberry Pi OS image takes minutes on a Pi, longer than a bootloader
// waits for its first TFTP answer. A build waits for it (the cache lock).
func (a *App) warmBase(ctx context.Context, c *config.Cluster, log *slog.Logger) {
	cacheDir, err := a.cacheDir(c, &buildOptions{})
	basePath := c.Path(c.Base)
	if err != nil || basePath == "" {
		return // the first build explains it
	}
	start := time.Now()
	if _, err := image.PrepareBase(ctx, basePath, filepath.Join(cacheDir, "base"), image.PrepareOptions{Log: log, SHA256: c.BaseSHA256}); err != nil {
		if ctx.Err() == nil {
			log.Warn("netboot: preparing the base image for enrolled nodes", "base", basePath, "err", err)
		}
		return
	}
	log.Info("netboot: base image ready for enrolled nodes", "base", basePath, "took", time.Since(start).Round(100*time.Millisecond))
}
