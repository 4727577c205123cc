package nbd

import (
	"errors"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// punchHole deallocates a range of an *os.File; it reads back as zeros.
func punchHole(d Disk, off, n int64) error {
	f, ok := d.(*os.File)
	if !ok {
		return errors.ErrUnsupported
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		ferr = unix.Fallocate(int(fd), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	}); err != nil {
		return err
	}
	return ferr
}

// syncDisk makes completed writes durable: fdatasync for an *os.File (data
// and the metadata needed to read it back), Sync otherwise.
func syncDisk(d Disk) error {
	f, ok := d.(*os.File)
	if !ok {
		return d.Sync()
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fdatasync(int(fd)) }); err != nil {
		return err
	}
	return serr
}

// setUserTimeout makes the kernel drop a connection whose sent data stays
// unacknowledged for d (TCP_USER_TIMEOUT), so that a node that vanished
// mid-transfer frees its export in seconds rather than after the default
// retransmission timeout of about 15 minutes.
func setUserTimeout(c *net.TCPConn, d time.Duration) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d/time.Millisecond))
	}); err != nil {
		return err
	}
	return serr
}
