//go:build !linux

package ext4_test

import "errors"

// setxattr cannot stage Linux extended attributes here: fxStage sets them
// with debugfs instead.
func setxattr(p, name string, v []byte) error {
	return errors.ErrUnsupported
}
