// Command initrd is the /init that `imgbake netboot` appends to a node's
// initramfs. It attaches the node's disk from the NBD server named on the
// kernel command line (imgbake.nbd=<server>:<port>/<export>), mounts the
// root partition and hands over to the node's /sbin/init. A helper process
// it leaves behind ("@imgbake-nbd", spared by systemd at shutdown as a
// root storage daemon) reconnects the disk when the server restarts.
//
// It is built static for arm64 and armv7 by `go generate ./netboot/initramfs`.
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	newRoot    = "/imgbake-root"
	keeperName = "@imgbake-nbd"
	nbdIndex   = 0
	// deadConnTimeout is how long the kernel holds I/O for a new
	// connection after the server went away (seconds).
	deadConnTimeout = 24 * 60 * 60
)

func main() {
	if len(os.Args) >= 3 && os.Args[0] == keeperName {
		lease := ""
		if len(os.Args) > 3 {
			lease = os.Args[3]
		}
		keep(os.Args[1], os.Args[2], lease)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "imgbake-netboot: this is the /init of a network-booted node's initramfs; it only runs as process 1")
		os.Exit(2)
	}
	if err := run(); err != nil {
		errorf("FAILED: %v", err)
		errorf("the node cannot boot from the network; check `imgbake netboot` on the server. Rebooting in 30 s.")
		time.Sleep(30 * time.Second)
		unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	}
}

// logf logs at the kernel's info level; errorf at error level, which the
// console shows even with "quiet".
func logf(format string, args ...any) { klog(6, format, args...) }

func errorf(format string, args ...any) { klog(3, format, args...) }

func warnf(format string, args ...any) { klog(4, format, args...) }

func klog(level int, format string, args ...any) {
	f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err == nil {
		defer f.Close()
	}
	writeKmsg(f, level, format, args...)
}

// writeKmsg writes one message at level to the kernel log kmsg, or to
// stderr when kmsg is nil or refuses it.
func writeKmsg(kmsg *os.File, level int, format string, args ...any) {
	msg := fmt.Sprintf("<%d>imgbake-netboot: "+format+"\n", append([]any{level}, args...)...)
	if kmsg != nil {
		if _, err := kmsg.WriteString(msg); err == nil {
			return
		}
	}
	os.Stderr.WriteString(msg[3:])
}

func run() error {
	if err := mountEarly(); err != nil {
		return err
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("reading /proc/cmdline: %w", err)
	}
	p, err := parseCmdline(string(cmdline))
	if err != nil {
		return err
	}
	loadModules(logf)
	nc, err := setupNetwork(p)
	if err != nil {
		return err
	}
	logf("network %s %s; disk %s from %s", nc.ifname, nc.addr, p.export, p.server)
	if err := startKeeper(p, nc.lease); err != nil {
		return err
	}
	disk := fmt.Sprintf("/dev/nbd%d", nbdIndex)
	rescanPartitions(disk)
	if err := waitDevice(p.root, 30*time.Second); err != nil {
		return fmt.Errorf("%w: the disk has no such partition", err)
	}
	if err := mountRoot(p, newRoot); err != nil {
		return err
	}
	if err := prepareRun(nc); err != nil {
		logf("writing network drop-ins: %v", err)
	}
	logf("switching to %s on %s", p.init, p.root)
	return switchRoot(newRoot, p.init)
}

// startKeeper starts the process that connects the disk and keeps it
// connected (and renews lease), and waits until the disk is attached.
func startKeeper(p params, lease leaseInfo) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	proc, err := os.StartProcess("/proc/self/exe", []string{keeperName, p.server, p.export, lease.String()},
		&os.ProcAttr{Dir: "/", Files: []*os.File{nil, os.Stdout, os.Stderr, w}})
	w.Close()
	if err != nil {
		return fmt.Errorf("starting the NBD helper: %w", err)
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	if strings.TrimSpace(line) != "ok" {
		proc.Kill()
		return fmt.Errorf("the NBD helper stopped before attaching the disk: %v", err)
	}
	return nil
}

// keep connects the disk, reports "ok" on fd 3, then reconnects whenever
// the connection dies; alongside, it renews the DHCP lease (leaseInfo
// encoded; empty: none). It runs for the whole life of the node.
func keep(server, export, lease string) {
	ready := os.NewFile(3, "ready")
	ctx := context.Background()
	if lease != "" {
		// Opened now: switch_root moves /dev out of this process's root.
		kmsg, _ := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
		go renewLease(ctx, lease, kmsg)
	}
	attached := false
	for backoff := time.Second; ; {
		conn, exp, err := dial(ctx, server, export)
		if err != nil {
			warnf("%v; retrying in %s", err, backoff)
			time.Sleep(backoff)
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		f, err := conn.File() // a blocking duplicate for the kernel
		conn.Close()
		if err != nil {
			logf("getting the socket: %v", err)
			continue
		}
		fd := int(f.Fd())
		if !attached {
			err = nbdConnect(nbdIndex, fd, exp, deadConnTimeout)
		} else {
			err = reconfigure(fd)
		}
		if err != nil {
			warnf("%v; retrying in %s", err, backoff)
			f.Close()
			time.Sleep(backoff)
			continue
		}
		if !attached {
			attached = true
			ready.WriteString("ok\n")
			ready.Close()
		} else {
			warnf("reconnected /dev/nbd%d to %s", nbdIndex, server)
		}
		backoff = time.Second
		waitDead(fd)
		f.Close()
		warnf("connection to %s lost; reconnecting", server)
	}
}

// reconfigure retries NBD_CMD_RECONFIGURE until the kernel has noticed the
// old connection is dead (it refuses while none is).
func reconfigure(fd int) error {
	var err error
	for range 50 {
		if err = nbdReconfigure(nbdIndex, fd); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

// waitDead blocks until the socket is shut down or reset: by the server
// closing it, by TCP keepalive giving up, or by the kernel dropping it.
func waitDead(fd int) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	for {
		n, err := unix.Poll(fds, -1)
		if err == unix.EINTR || (err == nil && n == 0) {
			continue
		}
		return
	}
}

// prepareRun mounts a tmpfs on the new root's /run (systemd keeps it) and
// writes the network drop-ins into it; resolv.conf and dhcpcd.conf get
// runtime copies bind-mounted over them.
func prepareRun(nc netConfig) error {
	run := filepath.Join(newRoot, "run")
	if err := unix.Mount("tmpfs", run, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("mounting /run: %w", err)
	}
	for _, f := range dropIns(nc) {
		path := filepath.Join(run, f.path)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(f.data), 0o644); err != nil {
			return err
		}
	}
	os.MkdirAll(filepath.Join(run, "imgbake"), 0o755)
	if len(nc.dns) > 0 {
		overlayFile(filepath.Join(newRoot, "etc/resolv.conf"), filepath.Join(run, "imgbake/resolv.conf"), resolvConf(nc))
	}
	if orig, err := os.ReadFile(filepath.Join(newRoot, "etc/dhcpcd.conf")); err == nil {
		overlayFile(filepath.Join(newRoot, "etc/dhcpcd.conf"), filepath.Join(run, "imgbake/dhcpcd.conf"), dhcpcdConf(string(orig), nc.ifname))
	}
	return nil
}

// overlayFile bind-mounts a runtime copy holding data over target, when
// target is a regular file (not a symlink into a resolver's directory).
func overlayFile(target, copyPath, data string) {
	fi, err := os.Lstat(target)
	if err != nil || !fi.Mode().IsRegular() {
		return
	}
	if err := os.WriteFile(copyPath, []byte(data), 0o644); err != nil {
		return
	}
	if err := unix.Mount(copyPath, target, "", unix.MS_BIND, ""); err != nil {
		logf("bind-mounting %s: %v", target, err)
	}
}
