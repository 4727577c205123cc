package flash

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Block-count and block-size ioctls of <sys/disk.h>:
// _IOR('d', 25, uint64_t) and _IOR('d', 24, uint32_t).
const (
	dkiocGetBlockCount = 0x40086419
	dkiocGetBlockSize  = 0x40046418
)

// openDevice opens a macOS disk. /dev/diskN is rewritten to its raw
// device /dev/rdiskN, which skips the buffer cache and is several times
// faster; writes to it must be whole sectors, which the flash writer's
// 4 KiB-aligned writes are.
func openDevice(path string) (*os.File, bool, error) {
	if strings.HasPrefix(path, "/dev/disk") {
		path = "/dev/r" + strings.TrimPrefix(path, "/dev/")
	}
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_EXLOCK|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EAGAIN) {
		return nil, false, fmt.Errorf("%s is busy: run `diskutil unmountDisk %s` and try again", path, path)
	}
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		return nil, false, fmt.Errorf("opening %s: %w: run imgbake with sudo", path, err)
	}
	if err != nil {
		return nil, false, fmt.Errorf("opening target: %w", err)
	}
	return f, false, nil
}

func deviceSize(f *os.File) (int64, error) {
	count, err := unix.IoctlGetInt(int(f.Fd()), dkiocGetBlockCount)
	if err != nil {
		return 0, err
	}
	size, err := unix.IoctlGetInt(int(f.Fd()), dkiocGetBlockSize)
	if err != nil {
		return 0, err
	}
	return int64(count) * int64(uint32(size)), nil
}

// rereadPartitions is not needed on macOS: diskarbitrationd notices the
// new partition table when the device is closed.
func rereadPartitions(*os.File) {}

// dropCache: raw devices are not cached; a regular file's pages are
// dropped by reopening it with F_NOCACHE, which reading back does not need
// for correctness.
func dropCache(f *os.File, regular bool) {
	unix.FcntlInt(f.Fd(), unix.F_NOCACHE, 1)
}
