package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// modulesDir holds the kernel modules the server put into the initramfs
// for each kernel release: <modulesDir>/<release>/NN-name.ko, loaded in
// name order (dependencies first).
const modulesDir = "/imgbake/modules"

func mountEarly() error {
	for _, m := range []struct{ src, dir, fstype string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
	} {
		os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.src, m.dir, m.fstype, unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mounting %s: %w", m.dir, err)
		}
	}
	return nil
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// loadModules loads the modules for the running kernel; modules already
// loaded or built in are fine.
func loadModules(logf func(string, ...any)) {
	dir := filepath.Join(modulesDir, kernelRelease())
	ents, err := os.ReadDir(dir)
	if err != nil {
		logf("no modules for kernel %s in the initramfs (%v); relying on built-in drivers", kernelRelease(), err)
		return
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	for _, e := range ents {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			logf("opening module %s: %v", e.Name(), err)
			continue
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			warnf("loading module %s: %v", e.Name(), err)
		}
	}
}

// netConfig is the interface that carries the root disk.
type netConfig struct {
	ifname string
	addr   net.IP
	dns    []string
	domain string
	// lease is the DHCP lease the NBD helper renews; its times are zero
	// when the kernel's ip=dhcp got it.
	lease leaseInfo
}

// waitNetwork waits for an interface (ifname, or any but lo) with an IPv4
// address: the kernel configures it for ip=dhcp when the driver is built in.
func waitNetwork(ifname string, timeout time.Duration) (netConfig, error) {
	deadline := time.Now().Add(timeout)
	for {
		ifs, _ := net.Interfaces()
		for _, i := range ifs {
			if i.Flags&net.FlagLoopback != 0 || i.Flags&net.FlagUp == 0 || (ifname != "" && i.Name != ifname) {
				continue
			}
			addrs, _ := i.Addrs()
			for _, a := range addrs {
				if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
					nc := netConfig{ifname: i.Name, addr: ipn.IP, lease: leaseInfo{ifname: i.Name, addr: ipn.IP.To4()}}
					nc.dns, nc.domain = pnpDNS()
					return nc, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return netConfig{}, errors.New("no network interface has an IPv4 address: the kernel's ip=dhcp found no network " +
				"(is the Ethernet driver built into the kernel, and is the cable in?)")
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// pnpDNS reads the name servers the kernel's DHCP client got.
func pnpDNS() (servers []string, domain string) {
	data, err := os.ReadFile("/proc/net/pnp")
	if err != nil {
		return nil, ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "nameserver" && f[1] != "0.0.0.0" {
			servers = append(servers, f[1])
		} else if len(f) == 2 && f[0] == "domain" {
			domain = f[1]
		}
	}
	return servers, domain
}

// waitDevice waits for a block device node to appear.
func waitDevice(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear", path)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rescanPartitions makes the kernel read the NBD disk's partition table.
func rescanPartitions(disk string) {
	f, err := os.Open(disk)
	if err != nil {
		return
	}
	defer f.Close()
	unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0)
}

func mountRoot(p params, dir string) error {
	os.MkdirAll(dir, 0o755)
	flags := uintptr(0)
	if p.readOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount(p.root, dir, p.fstype, flags, p.flags); err != nil {
		return fmt.Errorf("mounting %s on %s: %w", p.root, dir, err)
	}
	return nil
}

// switchRoot makes newRoot the root and executes init there, as
// switch_root(8) does: empty the initramfs, move the mounts, chroot.
func switchRoot(newRoot, init string) error {
	// Lstat: init is usually an absolute symlink (/sbin/init ->
	// /lib/systemd/systemd), which only resolves once newRoot is the root.
	if _, err := os.Lstat(filepath.Join(newRoot, strings.TrimPrefix(init, "/"))); err != nil {
		return fmt.Errorf("no %s on the root filesystem: %w", init, err)
	}
	for _, m := range []string{"/dev", "/proc", "/sys", "/run"} {
		target := filepath.Join(newRoot, m)
		if err := unix.Mount(m, target, "", unix.MS_MOVE, ""); err != nil {
			if m == "/run" {
				continue // only when the initramfs mounted one
			}
			unix.Unmount(m, unix.MNT_DETACH)
		}
	}
	emptyRootfs(newRoot)
	if err := os.Chdir(newRoot); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving the root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	return unix.Exec(init, []string{init}, os.Environ())
}

// emptyRootfs frees the initramfs's memory: it removes every file on the
// initramfs filesystem, never crossing into another mount (newRoot).
func emptyRootfs(newRoot string) {
	var root unix.Stat_t
	if unix.Lstat("/", &root) != nil {
		return
	}
	filepath.WalkDir("/", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "/" {
			return nil
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || st.Dev != root.Dev || p == newRoot {
			if d != nil && d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() {
			os.Remove(p)
		}
		return nil
	})
}
