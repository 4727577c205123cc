package flash

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openDevice opens a block device exclusively (the kernel refuses with
// EBUSY while a partition is mounted or the disk is otherwise in use) and
// for direct I/O, so a multi-gigabyte write does not fill the page cache and
// stall the machine; it falls back to buffered I/O when O_DIRECT is refused.
func openDevice(path string) (*os.File, bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_EXCL|unix.O_DIRECT, 0)
	if errors.Is(err, unix.EINVAL) {
		f, err = os.OpenFile(path, os.O_RDWR|unix.O_EXCL, 0)
		if err == nil {
			return f, false, nil
		}
	}
	if errors.Is(err, unix.EBUSY) {
		return nil, false, fmt.Errorf("%s is busy (mounted, or used by LVM, RAID or another program): unmount it or stop the program, then try again", path)
	}
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		return nil, false, fmt.Errorf("opening %s: %w: run imgbake as root (sudo) or as a member of the disk group", path, err)
	}
	if err != nil {
		return nil, false, fmt.Errorf("opening target: %w", err)
	}
	return f, true, nil
}

func deviceSize(f *os.File) (int64, error) {
	return f.Seek(0, 2)
}

// rereadPartitions asks the kernel to re-read the partition table
// (BLKRRPART), so /dev/sdX1, /dev/sdX2 match what was written. Errors are
// ignored: devices without partition support refuse it and nothing else
// depends on it.
func rereadPartitions(f *os.File) {
	unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0)
}

// dropCache drops the cached pages of a synced file or device, so that
// reading back reads the medium.
func dropCache(f *os.File, regular bool) {
	fd := int(f.Fd())
	if !regular {
		unix.IoctlSetInt(fd, unix.BLKFLSBUF, 0)
	}
	unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
}
