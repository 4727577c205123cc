// Package node keeps the disks of network-booted nodes.
//
// Each node gets its own disk: a copy of the image `imgbake build` made for
// it (out/k5.img), grown to the configured size, stored under the state
// directory as <state>/<node>/disk.img. The disk is made on the node's
// first network boot and then kept across reboots, rebuilds of the image
// and restarts of the server; only Reset replaces it.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/imgbake/imgbake/image"
	"github.com/imgbake/imgbake/image/plan"
)

// DefaultDiskSize is the size a node's disk is grown to when Store.DiskSize
// is 0.
const DefaultDiskSize = 16 << 30

// DiskName is the disk's file name inside a node's state directory.
const DiskName = "disk.img"

// ErrNoImage is wrapped by errors for a node whose image has not been
// built.
var ErrNoImage = errors.New("no image")

// Store finds and makes node disks.
type Store struct {
	// StateDir holds one directory per node. Required.
	StateDir string
	// ImageDir holds the built images, <node>.img. Required.
	ImageDir string
	// DiskSize is the size new disks are grown to (DefaultDiskSize when 0).
	// A disk is never shrunk: an image larger than DiskSize is used as is.
	DiskSize int64
	// Progress receives progress bars when it is a terminal; nil = none.
	Progress io.Writer
	// Log receives a line per disk made; nil = silent.
	Log *slog.Logger

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// DiskPath returns where the disk of node name lives.
func (s *Store) DiskPath(name string) string {
	return filepath.Join(s.StateDir, name, DiskName)
}

// ImagePath returns the built image the disk of node name is made from.
func (s *Store) ImagePath(name string) string {
	return filepath.Join(s.ImageDir, name+".img")
}

// lock serialises work on one node's disk.
func (s *Store) lock(name string) func() {
	s.mu.Lock()
	if s.locks == nil {
		s.locks = make(map[string]*sync.Mutex)
	}
	l, ok := s.locks[name]
	if !ok {
		l = &sync.Mutex{}
		s.locks[name] = l
	}
	s.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// Ensure returns the path of name's disk, making it from the node's image
// when it does not exist yet. created reports whether it was made now. An
// existing disk is never touched, however new the image.
func (s *Store) Ensure(ctx context.Context, name string) (path string, created bool, err error) {
	if err := checkName(name); err != nil {
		return "", false, err
	}
	unlock := s.lock(name)
	defer unlock()
	path = s.DiskPath(name)
	if _, err := os.Stat(path); err == nil {
		return path, false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", false, fmt.Errorf("checking the disk of %s: %w", name, err)
	}
	if err := s.make(ctx, name); err != nil {
		return "", false, err
	}
	return path, true, nil
}

// Reset replaces name's disk with a fresh copy of its image, grown again.
// The node must be powered off: a running node would go on writing to the
// disk it has. The old disk is replaced only once the new one is complete.
func (s *Store) Reset(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	unlock := s.lock(name)
	defer unlock()
	return s.make(ctx, name)
}

// make copies the image of name into its state directory and grows it,
// through image.Build with an empty plan: the same reflink-or-sparse copy
// and partition + ext4 growth a build with --size does. Build writes the
// disk under a temporary name and renames it, with its .bmap and manifest.
func (s *Store) make(ctx context.Context, name string) error {
	src := s.ImagePath(name)
	fi, err := os.Stat(src)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w for node %s: %s does not exist; run `imgbake build %s` first", ErrNoImage, name, src, name)
	}
	if err != nil {
		return fmt.Errorf("reading the image of %s: %w", name, err)
	}
	info, err := image.Inspect(src)
	if err != nil {
		return fmt.Errorf("reading the image of %s: %w", name, err)
	}
	dir := filepath.Join(s.StateDir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the state directory of %s: %w", name, err)
	}
	size := s.DiskSize
	if size == 0 {
		size = DefaultDiskSize
	}
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log.Info("netboot: making disk", "node", name, "from", src, "size", size)
	_, err = image.Build(ctx, image.BuildOptions{
		Base:     &image.Base{Path: src, Size: fi.Size(), Format: "raw"},
		Info:     info,
		Output:   s.DiskPath(name),
		Plan:     &plan.Plan{},
		Size:     size,
		Meta:     map[string]string{"node": name, "made-from": src},
		Progress: s.Progress,
		Log:      log,
	})
	if err != nil {
		return fmt.Errorf("making the disk of %s: %w", name, err)
	}
	return nil
}

// checkName refuses node names that could leave the state directory.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return fmt.Errorf("node name %q: want a plain host name", name)
	}
	return nil
}
