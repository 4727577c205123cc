package ext4_test

import "syscall"

// setxattr sets an extended attribute of the staged file p, for mkfs -d to
// copy into the image.
func setxattr(p, name string, v []byte) error {
	return syscall.Setxattr(p, name, v, 0)
}
