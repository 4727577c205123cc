package serve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
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
		if req.Kind != tftp.NoPrefix {
			s.logger().Warn("netboot: TFTP request from an unknown Pi; to boot it, add its serial (or MAC) to the node's netboot: in the cluster file",
				"prefix", req.Prefix, "client", req.Client.Addr())
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
	data, err := s.bootFile(n, path, req.File)
	if err != nil {
		return tftp.File{}, err
	}
	if req.Kind != tftp.NoPrefix {
		// The node has the file: the request is evidence of its boot.
		if err := s.bindings.BindTFTP(n.binding(), req.Client.Addr()); err != nil {
			return tftp.File{}, fmt.Errorf("%w: %w", tftp.ErrNotFound, err)
		}
		s.tftpServed(n, req.Client.Addr().Unmap(), req.File)
	}
	return tftp.File{Data: data, Size: int64(data.Len())}, nil
}

// servedFile is what bootFile returns: a byte slice or a concatenation.
type servedFile interface {
	ReadAt(p []byte, off int64) (int, error)
	Len() int
}

type concatFile struct{ *initramfs.Concat }

func (c concatFile) Len() int { return int(c.Size()) }

// bootFile reads one boot file of node n from its disk at path.
func (s *Server) bootFile(n Node, path, name string) (servedFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening the disk of %s: %w", n.Name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	info, err := image.InspectReader(f, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("reading the disk of %s: %w", n.Name, err)
	}
	bp, ok := partition(info, info.BootPartition)
	if !ok {
		return nil, fmt.Errorf("%w: the disk of %s has no FAT boot partition", tftp.ErrNotFound, n.Name)
	}
	boot, err := fat.Open(f, bp.Start, bp.Size, true, time.Time{})
	if err != nil {
		return nil, fmt.Errorf("reading the boot partition of %s: %w", n.Name, err)
	}
	read := func(p string) ([]byte, error) {
		data, err := boot.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s on the boot partition of %s", tftp.ErrNotFound, p, n.Name)
		}
		return data, err
	}
	config, _ := boot.ReadFile("config.txt") // absent: firmware defaults
	served, initramfsNames := netboot.Config(string(config))
	switch {
	case strings.EqualFold(name, netboot.CmdlineFile(string(config))):
		orig, err := read(name)
		if err != nil && !errors.Is(err, tftp.ErrNotFound) {
			return nil, err
		}
		return bytes.NewReader([]byte(netboot.Cmdline(string(orig), s.nbdServer(), n.Name, info.RootPartition))), nil
	case strings.EqualFold(name, "config.txt"):
		return bytes.NewReader([]byte(served)), nil
	case slices.ContainsFunc(initramfsNames, func(x string) bool { return strings.EqualFold(x, name) }):
		return s.initramfs(n, f, info, name, read)
	}
	data, err := read(name)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(data), nil
}

// initramfs is the node's initramfs (when it has one) followed by the
// netboot addition: our /init, and the nbd module of each of the node's
// kernels, taken from its root filesystem. Kernels and initramfs the node
// installs itself are what it gets.
func (s *Server) initramfs(n Node, f *os.File, info *image.Info, name string, read func(string) ([]byte, error)) (servedFile, error) {
	orig, err := read(name)
	if err != nil && !errors.Is(err, tftp.ErrNotFound) {
		return nil, err
	}
	init, err := s.initFor(info.OS.Arch)
	if err != nil {
		return nil, err
	}
	rp, _ := partition(info, info.RootPartition)
	root, err := ext4.Open(f, rp.Start, rp.Size, &ext4.Options{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("reading the root filesystem of %s: %w", n.Name, err)
	}
	defer root.Close()
	mods, err := initramfs.NodeModules(root, initramfs.NetbootModules()...)
	if err != nil {
		return nil, fmt.Errorf("reading the kernel modules of %s: %w", n.Name, err)
	}
	add, err := initramfs.Addition(init, mods)
	if err != nil {
		return nil, err
	}
	return concatFile{initramfs.NewConcat(bytes.NewReader(orig), int64(len(orig)), add)}, nil
}

func partition(info *image.Info, num int) (image.Partition, bool) {
	for _, p := range info.Partitions {
		if p.Number == num && num != 0 {
			return p, true
		}
	}
	return image.Partition{}, false
}
