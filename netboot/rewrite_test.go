package netboot

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCmdline(t *testing.T) {
	srv := netip.MustParseAddrPort("192.168.1.5:10809")
	for _, c := range []struct{ in, want string }{
		{ // RPi OS Bookworm, as imgbake build leaves it
			"console=serial0,115200 console=tty1 root=PARTUUID=3e247b30-02 rootfstype=ext4 fsck.repair=yes rootwait cgroup_memory=1 cgroup_enable=memory\n",
			"console=serial0,115200 console=tty1 rootfstype=ext4 fsck.repair=yes cgroup_memory=1 cgroup_enable=memory root=/dev/nbd0p2 imgbake.nbd=192.168.1.5:10809/k5 ip=dhcp rootwait\n",
		},
		{ // an earlier network boot setup, CRLF, a second line the firmware ignores
			"console=tty1 root=/dev/nfs nfsroot=10.0.0.1:/srv/k5 ip=10.0.0.9 init=/sbin/init quiet\r\nsecond line\n",
			"console=tty1 init=/sbin/init quiet root=/dev/nbd0p2 imgbake.nbd=192.168.1.5:10809/k5 ip=dhcp rootwait\n",
		},
		{"", "root=/dev/nbd0p2 imgbake.nbd=192.168.1.5:10809/k5 ip=dhcp rootwait\n"},
	} {
		if got := Cmdline(c.in, srv, "k5", 2); got != c.want {
			t.Errorf("Cmdline(%q):\n got %q\nwant %q", c.in, got, c.want)
		}
	}
	if got := Cmdline("root=LABEL=armbi_root", srv, "a1", 3); got != "root=/dev/nbd0p3 imgbake.nbd=192.168.1.5:10809/a1 ip=dhcp rootwait\n" {
		t.Errorf("partition 3: %q", got)
	}
}

func TestConfig(t *testing.T) {
	bookworm := "dtparam=audio=on\ncamera_auto_detect=1\nauto_initramfs=1\narm_64bit=1\n[cm4]\notg_mode=1\n[all]\n"
	got, names := Config(bookworm)
	if got != bookworm {
		t.Errorf("config with auto_initramfs changed: %q", got)
	}
	if diff := cmp.Diff([]string{"initramfs", "initramfs7", "initramfs7l", "initramfs8", "initramfs_2712"}, names); diff != "" {
		t.Errorf("names: %s", diff)
	}
	explicit := "kernel=vmlinuz\n[pi4]\n  initramfs initrd.img followkernel\n[pi5]\ninitramfs initrd-2712.img\n"
	got, names = Config(explicit)
	if got != explicit || !cmp.Equal(names, []string{"initrd.img", "initrd-2712.img"}) {
		t.Errorf("explicit: %q %v", got, names)
	}
	old := "gpu_mem=16\n#initramfs commented followkernel\n#auto_initramfs=1\nauto_initramfs=0"
	got, names = Config(old)
	want := old + "\n\n# Added by imgbake netboot (not on the disk): the network root's initramfs.\n[all]\ninitramfs imgbake-initramfs followkernel\n"
	if got != want || !cmp.Equal(names, []string{AddedInitramfs}) {
		t.Errorf("no initramfs:\n got %q %v\nwant %q", got, names, want)
	}
}

func TestCmdlineFile(t *testing.T) {
	for in, want := range map[string]string{
		"":                                    "cmdline.txt",
		"arm_64bit=1\ncmdline=nfs.txt\r\n":    "nfs.txt",
		"cmdline=a.txt\n[pi4]\ncmdline=b.txt": "b.txt",
		"#cmdline=x.txt\ncmdline=":            "cmdline.txt",
	} {
		if got := CmdlineFile(in); got != want {
			t.Errorf("CmdlineFile(%q) = %q, want %q", in, got, want)
		}
	}
}
