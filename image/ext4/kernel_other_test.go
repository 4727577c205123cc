//go:build !linux

package ext4_test

import "testing"

// growKernelCheck needs the Linux kernel to mount the grown filesystem.
func growKernelCheck(t *testing.T, img string, oldSize, newSize int64, m model) {
	t.Helper()
	t.Log("not Linux: skipping the kernel's view of the grown filesystem")
}
