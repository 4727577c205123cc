// Package e2e holds imgbake's QEMU boot tests: base images built from
// Debian's packages in the Raspberry Pi OS layout (mkbase.sh), a stand-in k3s
// (standin-k3s) that reports on the serial console how the node started, and
// tests that bake node images with imgbake and boot them under QEMU. Run them
// with `make e2e`.
package e2e
