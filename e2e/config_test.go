package e2e

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestParseConfigTxt checks how the boot tests pick kernel, initramfs and
// command line file from config.txt, the way a Pi 4's firmware does.
func TestParseConfigTxt(t *testing.T) {
	tests := []struct {
		name, config string
		want         bootSpec
		wantErr      bool
	}{{
		name: "Bookworm arm64: auto_initramfs, default kernel8.img",
		config: "# comment\ndtparam=audio=on\nauto_initramfs=1\narm_64bit=1\n" +
			"[cm4]\notg_mode=1\n[cm5]\nkernel=kernel_2712.img\n[all]\n",
		want: bootSpec{Kernel: "kernel8.img", Initramfs: "initramfs8", Cmdline: "cmdline.txt"},
	}, {
		name:   "explicit kernel and initramfs",
		config: "arm_64bit=0\nkernel=kernel7l.img\ninitramfs initramfs7l followkernel\n",
		want:   bootSpec{Kernel: "kernel7l.img", Initramfs: "initramfs7l", Cmdline: "cmdline.txt"},
	}, {
		name:   "32-bit default kernel with auto_initramfs and another cmdline file",
		config: "auto_initramfs=1 # trailing comment\ncmdline=cmdline-k5.txt\n",
		want:   bootSpec{Kernel: "kernel7l.img", Initramfs: "initramfs7l", Cmdline: "cmdline-k5.txt"},
	}, {
		name:   "sections for other boards are ignored",
		config: "[pi5]\nkernel=kernel_2712.img\n[pi4]\nkernel=kernel8.img\n[all]\nauto_initramfs=1\n",
		want:   bootSpec{Kernel: "kernel8.img", Initramfs: "initramfs8", Cmdline: "cmdline.txt"},
	}, {
		name:    "no initramfs",
		config:  "arm_64bit=1\n",
		wantErr: true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfigTxt([]byte(tt.config))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseConfigTxt = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseConfigTxt (-want +got):\n%s", diff)
			}
		})
	}
}
