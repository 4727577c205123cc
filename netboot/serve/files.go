package serve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imgbake/imgbake/image"
	"github.com/imgbake/imgbake/image/ext4"
	"github.com/imgbake/imgbake/image/fat"
	"github.com/imgbake/imgbake/netboot"
	"github.com/imgbake/imgbake/netboot/initramfs"
	"github.com/imgbake/imgbake/netboot/node"
	"github.com/imgbake/imgbake/netboot/tftp"
)

// nodeFor finds the node a TFTP request is for: by its serial or MAC
// prefix, or, without a prefix (the Pi 3B ROM's bootcode.bin), by the
// address it booted from; bootcode.bin, the same for every node, comes
// from any node's disk.
func (s *Server) nodeFor(req tftp.Request) (Node, bool) {
	nodes := s.current()
	for _, n := range nodes {
		switch req.Kind {
		case tftp.SerialPrefix:
			if string(n.Serial) == req.Prefix {
				return n, true
			}
		case tftp.MACPrefix:
			if n.MAC != nil && netboot.MACPrefix(n.MAC) == req.Prefix {
				return n, true
			}
		}
	}
	if req.Kind != tftp.NoPrefix {
		return Node{}, false
	}
	if name, ok := s.bindings.Bound(req.Client.Addr()); ok {
		return s.byName(name)
	}
	if strings.EqualFold(req.File, "bootcode.bin") {
		for _, n := range nodes {
			if _, err := os.Stat(s.Disks.DiskPath(n.Name)); err == nil {
				return n, true
			}
		}
	}
	return Node{}, false
}

// resolve is the TFTP resolver: files from the FAT partition of the node's
// disk, with cmdline.txt, config.txt and the initramfs made for network
// boot on the way out.
func (s *Server) resolve(ctx context.Context, req tftp.Request) (tftp.File, error) {
	n, ok := s.nodeFor(req)
	if !ok {
		if ok, dropped := s.lines.Allow(req.Prefix); ok && req.Kind != tftp.NoPrefix {
			s.logger().Warn("netboot: TFTP request from an unknown Pi; to boot it, add its serial (or MAC) to the node's netboot: in the cluster file",
				"prefix", req.Prefix, "client", req.Client.Addr(), "dropped_lines", dropped)
		}
		return tftp.File{}, fmt.Errorf("%w: no node for %q", tftp.ErrNotFound, req.Raw)
	}
	shared := req.Kind == tftp.NoPrefix && strings.EqualFold(req.File, "bootcode.bin")
	if !shared {
		// Refused like an unknown node: the client learns nothing.
		if err := s.bindings.AllowTFTP(n.binding(), req.Client.Addr()); err != nil {
			return tftp.File{}, fmt.Errorf("%w: %w", tftp.ErrNotFound, err)
		}
	}
	path, created, err := s.Disks.Ensure(ctx, n.Name)
	if errors.Is(err, node.ErrNoImage) && s.waitBuild(ctx, n.Name) {
		path, created, err = s.Disks.Ensure(ctx, n.Name)
	}
	if errors.Is(err, node.ErrNoImage) {
		s.logger().Warn("netboot: cannot boot node", "node", n.Name, "err", err)
		return tftp.File{}, fmt.Errorf("%w: %v", tftp.ErrNotFound, err)
	}
	if err != nil {
		return tftp.File{}, err
	}
	if created {
		s.logger().Info("netboot: made the node's disk", "node", n.Name, "disk", path)
	}
	f, err := s.bootFile(n, path, req.File)
	if err != nil {
		return tftp.File{}, err
	}
	if req.Kind != tftp.NoPrefix {
		// The node has the file: the request is evidence of its boot.
		if err := s.bindings.BindTFTP(n.binding(), req.Client.Addr()); err != nil {
			f.Data.(io.Closer).Close()
			return tftp.File{}, fmt.Errorf("%w: %w", tftp.ErrNotFound, err)
		}
		s.tftpServed(n, req.Client.Addr().Unmap(), req.File)
	}
	return f, nil
}

// bootFile opens one boot file of node n from its disk at path, read in
// place: a file costs its extent list, not its size, however many
// clients ask for it. The file's Data is an io.Closer.
func (s *Server) bootFile(n Node, path, name string) (tftp.File, error) {
	d, err := s.bootDisk(n.Name, path)
	if err != nil {
		return tftp.File{}, err
	}
	f, err := d.file(n, name, s)
	if err != nil {
		d.release()
		return tftp.File{}, err
	}
	return tftp.File{Data: servedFile{f, d}, Size: f.Size()}, nil
}

// sizedReaderAt is a served file's contents.
type sizedReaderAt interface {
	io.ReaderAt
	Size() int64
}

// servedFile holds its disk open until the transfer closes it.
type servedFile struct {
	sizedReaderAt
	d *bootDisk
}

func (f servedFile) Close() error { f.d.release(); return nil }

// bootDisk is a node's disk opened for its boot files: the FAT boot
// partition and, built once, the initramfs addition. It is kept while the
// disk file is unchanged (same inode, size and modification time) and
// closed when replaced and no transfer reads it any more.
type bootDisk struct {
	f        *os.File
	ino      uint64
	size     int64
	mtime    time.Time
	info     *image.Info
	boot     *fat.FS
	config   string
	refs     int // transfers reading it, plus one while it is current
	addOnce  sync.Once
	add      []byte
	addErr   error
	released func(*bootDisk)
}

// bootDisk returns the open disk of node name at path, with a reference
// the caller must release.
func (s *Server) bootDisk(name, path string) (*bootDisk, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("opening the disk of %s: %w", name, err)
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino
	s.mu.Lock()
	if d := s.boots[name]; d != nil && d.ino == ino && d.size == fi.Size() && d.mtime.Equal(fi.ModTime()) {
		d.refs++
		s.mu.Unlock()
		return d, nil
	}
	s.mu.Unlock()
	d, err := openBootDisk(name, path)
	if err != nil {
		return nil, err
	}
	d.released = s.closeBootDisk
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.boots == nil {
		s.boots = map[string]*bootDisk{}
	}
	if old := s.boots[name]; old != nil {
		old.refs-- // no longer current
		if old.refs == 0 {
			old.f.Close()
		}
	}
	s.boots[name] = d
	d.refs = 2 // current, and the caller's
	return d, nil
}

func (s *Server) closeBootDisk(d *bootDisk) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d.refs--
	if d.refs == 0 {
		d.f.Close()
	}
}

func (d *bootDisk) release() { d.released(d) }

func openBootDisk(name, path string) (*bootDisk, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening the disk of %s: %w", name, err)
	}
	d, err := readBootDisk(f, name)
	if err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

func readBootDisk(f *os.File, name string) (*bootDisk, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	info, err := image.InspectReader(f, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("reading the disk of %s: %w", name, err)
	}
	bp, ok := info.Partition(info.BootPartition)
	if !ok {
		return nil, fmt.Errorf("%w: the disk of %s has no FAT boot partition", tftp.ErrNotFound, name)
	}
	boot, err := fat.Open(f, bp.Start, bp.Size, true, time.Time{})
	if err != nil {
		return nil, fmt.Errorf("reading the boot partition of %s: %w", name, err)
	}
	config, _ := boot.ReadFile("config.txt") // absent: firmware defaults
	return &bootDisk{f: f, ino: fi.Sys().(*syscall.Stat_t).Ino, size: fi.Size(), mtime: fi.ModTime(),
		info: info, boot: boot, config: string(config)}, nil
}

// open opens a file of the boot partition in place.
func (d *bootDisk) open(n Node, p string) (*fat.File, error) {
	f, err := d.boot.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s on the boot partition of %s", tftp.ErrNotFound, p, n.Name)
	}
	return f, err
}

// file is boot file name of node n: from the boot partition, with
// cmdline.txt, config.txt and the initramfs made for network boot.
func (d *bootDisk) file(n Node, name string, s *Server) (sizedReaderAt, error) {
	served, initramfsNames := netboot.Config(d.config)
	switch {
	case strings.EqualFold(name, netboot.CmdlineFile(d.config)):
		var orig []byte
		if f, err := d.open(n, name); err == nil && f.Size() < 64<<10 {
			orig = make([]byte, f.Size())
			if _, err := f.ReadAt(orig, 0); err != nil {
				return nil, fmt.Errorf("reading %s of %s: %w", name, n.Name, err)
			}
		} else if err != nil && !errors.Is(err, tftp.ErrNotFound) {
			return nil, err
		}
		return bytes.NewReader([]byte(netboot.Cmdline(string(orig), s.nbdServer(), n.Name, d.info.RootPartition))), nil
	case strings.EqualFold(name, "config.txt"):
		return bytes.NewReader([]byte(served)), nil
	case slices.ContainsFunc(initramfsNames, func(x string) bool { return strings.EqualFold(x, name) }):
		return d.initramfs(n, name, s)
	}
	return d.open(n, name)
}

// initramfs is the node's initramfs (when it has one) followed by the
// netboot addition: our /init, and the nbd module of each of the node's
// kernels, taken from its root filesystem. Kernels and initramfs the node
// installs itself are what it gets.
func (d *bootDisk) initramfs(n Node, name string, s *Server) (sizedReaderAt, error) {
	var orig io.ReaderAt = bytes.NewReader(nil)
	var origSize int64
	if f, err := d.open(n, name); err == nil {
		orig, origSize = f, f.Size()
	} else if !errors.Is(err, tftp.ErrNotFound) {
		return nil, err
	}
	d.addOnce.Do(func() { d.add, d.addErr = d.addition(n, s) })
	if d.addErr != nil {
		return nil, d.addErr
	}
	return initramfs.NewConcat(orig, origSize, d.add), nil
}

// addition builds the netboot initramfs addition of node n.
func (d *bootDisk) addition(n Node, s *Server) ([]byte, error) {
	init, err := s.initFor(d.info.OS.Arch)
	if err != nil {
		return nil, err
	}
	rp, _ := d.info.Partition(d.info.RootPartition)
	root, err := ext4.Open(d.f, rp.Start, rp.Size, &ext4.Options{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("reading the root filesystem of %s: %w", n.Name, err)
	}
	defer root.Close()
	mods, err := initramfs.NodeModules(root, initramfs.NetbootModules()...)
	if err != nil {
		return nil, fmt.Errorf("reading the kernel modules of %s: %w", n.Name, err)
	}
	return initramfs.Addition(init, mods)
}
