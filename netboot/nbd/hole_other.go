//go:build !linux

package nbd

import "errors"

// punchHole is only implemented on Linux; elsewhere zeros are written.
func punchHole(Disk, int64, int64) error { return errors.ErrUnsupported }

// syncDisk makes completed writes durable.
func syncDisk(d Disk) error { return d.Sync() }
