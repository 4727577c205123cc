//go:build !linux

package nbd

import (
	"errors"
	"net"
	"time"
)

// punchHole is only implemented on Linux; elsewhere zeros are written.
func punchHole(Disk, int64, int64) error { return errors.ErrUnsupported }

// syncDisk makes completed writes durable.
func syncDisk(d Disk) error { return d.Sync() }

// setUserTimeout is only implemented on Linux.
func setUserTimeout(*net.TCPConn, time.Duration) error { return nil }
