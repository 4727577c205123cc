package flash

import (
	"context"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Devices returns the disks of this machine that could be flash targets.
func Devices(ctx context.Context) ([]Device, error) {
	return Sysfs{Root: "/"}.Devices()
}

// LookupDevice returns the disk at path (/dev/sdb, a /dev/disk/by-id
// link). A partition, or anything that is not a block device, is an error.
func LookupDevice(ctx context.Context, path string) (*Device, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("looking up %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		return nil, fmt.Errorf("looking up %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, fmt.Errorf("%s is not a block device", path)
	}
	s := Sysfs{Root: "/"}
	name, err := s.ByDevNum(unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
	if err != nil {
		return nil, fmt.Errorf("looking up %s: %w", path, err)
	}
	return s.Device(name)
}
