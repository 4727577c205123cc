#!/usr/bin/env bash
# mkbase.sh builds a Raspberry Pi OS-like base image from Debian's own
# packages, for the QEMU boot tests. No emulation and no loop mounts: the
# packages are unpacked with dpkg-deb, the few maintainer-script effects that
# systemd needs are done by hand, and the root filesystem is made with
# `mkfs.ext4 -d`.
#
#   mkbase.sh fetch ARCH                  download the .debs (apt, network)
#   mkbase.sh build ARCH OUT.img [EXTRA]  build the image (offline if fetched)
#
# ARCH is arm64 (kernel8.img, like Raspberry Pi OS arm64) or armhf
# (kernel7l.img, ID=raspbian). EXTRA is a directory copied over the root
# filesystem last (the boot tests use it to add a test-only unit; the base
# image itself never has one). The .debs are cached in
# $IMGBAKE_E2E_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/imgbake-e2e).
#
# Layout (as pi-gen makes it): MBR with disk id D, p1 FAT32 "bootfs" at
# sector 8192 (512 MiB) holding config.txt, cmdline.txt, the kernel and its
# initramfs; p2 ext4 "rootfs" (mkfs.ext4 -O ^64bit,^huge_file) mounted by
# PARTUUID=D-02, /boot/firmware by PARTUUID=D-01. The initramfs is a small
# busybox one: it loads the virtio and ext4 modules, finds root= by PARTUUID
# and switches to /sbin/init (systemd).
set -euo pipefail

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Userland: the essential set plus what a Raspberry Pi OS Lite node boots with.
PACKAGES="?essential usr-is-merged systemd systemd-sysv udev dbus kmod
	dosfstools e2fsprogs iproute2 netbase tzdata passwd"
# Kernel modules the root filesystem carries (the rest of Debian's ~300 MB is
# left out to keep the image small); the initramfs gets INITRD_MODULES.
ROOT_MODULES="virtio_mmio virtio_pci virtio_blk virtio_net virtio_rng ext4
	crc32c_generic vfat nls_cp437 nls_ascii nls_utf8 gpio_keys gpio-pl061
	overlay br_netfilter evdev"
INITRD_MODULES="virtio_mmio virtio_pci virtio_blk crc32c_generic ext4"

die() { echo "mkbase: $*" >&2; exit 1; }

cache_root() { echo "${IMGBAKE_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imgbake-e2e}"; }

arch_vars() {
	case "$1" in
	arm64)
		KPKG=linux-image-arm64 KERNEL=kernel8.img INITRD=initramfs8 QEMU_ARCH=aarch64
		DISKID=5e3da3a4 ;;
	armhf)
		KPKG=linux-image-armmp-lpae KERNEL=kernel7l.img INITRD=initramfs7l QEMU_ARCH=arm
		DISKID=9c7e1a2b ;;
	*) die "unknown arch $1 (want arm64 or armhf)" ;;
	esac
	C="$(cache_root)/$1"
}

aptc() { APT_CONFIG="$C/apt.conf" "$@"; }

# fetch downloads every package into $C (a private apt root: the host's
# dpkg architectures and package lists are left alone).
fetch() {
	arch_vars "$1"
	# Builds running in parallel share the cache: one fetches while the
	# others wait, then all read it under a shared lock held until they exit.
	mkdir -p "$(cache_root)"
	exec 9>"$(cache_root)/$1.lock"
	flock 9
	# The point release and its updates (no -security: a boot fixture needs
	# no security fixes, and one suite less is one mirror sync less to hit).
	local want="$MIRROR $SUITE $SUITE-updates $PACKAGES $KPKG"
	if [ -f "$C/fetched" ] && [ "$(cat "$C/fetched")" = "$want" ]; then
		flock -s 9
		return 0
	fi
	rm -rf "$C"
	mkdir -p "$C/etc/apt/apt.conf.d" "$C/etc/apt/preferences.d" "$C/etc/apt/sources.list.d" \
		"$C/var/lib/apt/lists/partial" "$C/var/cache/apt/archives/partial" \
		"$C/var/lib/dpkg" "$C/kernel"
	: >"$C/var/lib/dpkg/status"
	cat >"$C/etc/apt/sources.list" <<-EOF
	deb [arch=$1 signed-by=$KEYRING] $MIRROR $SUITE main
	deb [arch=$1 signed-by=$KEYRING] $MIRROR $SUITE-updates main
	EOF
	cat >"$C/apt.conf" <<-EOF
	Dir "$C/";
	Dir::State::status "$C/var/lib/dpkg/status";
	APT::Architecture "$1";
	APT::Architectures { "$1"; };
	APT::Install-Recommends "false";
	APT::Sandbox::User "root";
	Debug::NoLocking "true";
	EOF
	# A mirror caught mid-sync fails the update; it is fine a moment later.
	local try
	for try in 1 2 3 4; do
		aptc apt-get -qq update && break
		[ "$try" = 4 ] && die "apt-get update failed: check the network or the Debian mirror"
		sleep $((try * 10))
	done
	# shellcheck disable=SC2086
	aptc apt-get -qq -y install --download-only $PACKAGES >/dev/null
	local kver
	kver=$(aptc apt-cache depends "$KPKG" | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)/\1/p' | head -1)
	[ -n "$kver" ] || die "cannot resolve $KPKG"
	(cd "$C/kernel" && aptc apt-get -qq download "$kver" busybox-static)
	echo "$want" >"$C/fetched"
	exec 9>&-
}

unpack() { # unpack DEB DIR
	dpkg-deb --fsys-tarfile "$1" | tar -x --keep-directory-symlink -C "$2"
}

build() {
	local arch=$1 out=$2 extra=${3:-}
	arch_vars "$arch"
	[ "$(id -u)" = 0 ] || die "must run as root (file owners in the image come from the staging tree)"
	for t in dpkg-deb apt-get mkfs.ext4 mkfs.vfat mcopy sfdisk cpio depmod modprobe flock systemd-sysusers systemctl; do
		command -v "$t" >/dev/null || die "$t not found: install dpkg apt e2fsprogs dosfstools mtools fdisk cpio kmod util-linux systemd"
	done
	fetch "$arch"
	local w
	w=$(mktemp -d "${out}.work.XXXXXX")
	# shellcheck disable=SC2064
	trap "rm -rf '$w'" EXIT
	local s=$w/root k=$w/kernel i=$w/initrd
	mkdir -p "$s/usr/bin" "$s/usr/sbin" "$s/usr/lib" "$s/var/lib/dpkg" "$k" "$i"
	ln -s usr/bin "$s/bin"; ln -s usr/sbin "$s/sbin"; ln -s usr/lib "$s/lib"

	local deb
	for deb in "$C"/var/cache/apt/archives/*.deb; do
		unpack "$deb" "$s"
		dpkg-deb -f "$deb" | sed '/^Package:/a Status: install ok installed' >>"$s/var/lib/dpkg/status"
		echo >>"$s/var/lib/dpkg/status"
	done
	unpack "$C"/kernel/linux-image-*.deb "$k"
	unpack "$C"/kernel/busybox-static_*.deb "$i"

	local kver
	kver=$(ls "$k/lib/modules")
	install_modules "$k" "$s" "$kver"
	fixup_root "$arch" "$s"
	make_initrd "$s" "$i" "$kver"
	[ -z "$extra" ] || cp -a "$extra/." "$s/"
	# Nothing left for ldconfig.service and systemd-hwdb-update.service.
	touch "$s/etc/.updated" "$s/var/.updated"

	mkdir -p "$w/boot"
	cp "$k/boot/vmlinuz-$kver" "$w/boot/$KERNEL"
	cp "$i.img" "$w/boot/$INITRD"
	boot_files "$arch" "$w/boot"
	make_disk "$w" "$out.tmp"
	mv "$out.tmp" "$out"
}

install_modules() { # install_modules KERNELTREE ROOT KVER
	local k=$1 s=$2 kv=$3 m src=$1/lib/modules/$3 dst=$2/usr/lib/modules/$3
	mkdir -p "$dst"
	cp "$src"/modules.builtin* "$src"/modules.order "$dst/"
	depmod -b "$k" "$kv"
	# shellcheck disable=SC2086
	for m in $ROOT_MODULES; do
		modprobe -d "$k" -S "$kv" --show-depends "$m" 2>/dev/null | awk '$1=="insmod"{print $2}'
	done | sort -u | while read -r m; do
		m=${m#"$k"}
		mkdir -p "$s$(dirname "$m")"
		cp "$k$m" "$s$m"
	done
	depmod -b "$s" "$kv"
}

fixup_root() { # fixup_root ARCH ROOT: what maintainer scripts would have done
	local arch=$1 s=$2
	cp "$s/usr/share/base-passwd/passwd.master" "$s/etc/passwd"
	cp "$s/usr/share/base-passwd/group.master" "$s/etc/group"
	awk -F: '{print $1 ":*:19000:0:99999:7:::"}' "$s/etc/passwd" >"$s/etc/shadow"
	awk -F: '{print $1 ":*::"}' "$s/etc/group" >"$s/etc/gshadow"
	chmod 0640 "$s/etc/shadow" "$s/etc/gshadow"
	chgrp 42 "$s/etc/shadow" "$s/etc/gshadow"
	# System users of systemd, dbus, ... (their postinst runs systemd-sysusers).
	systemd-sysusers --root="$s" >/dev/null 2>&1
	echo uninitialized >"$s/etc/machine-id"
	mkdir -p "$s/var/lib/dbus"
	ln -sf /etc/machine-id "$s/var/lib/dbus/machine-id"
	ln -sf multi-user.target "$s/etc/systemd/system/default.target"
	systemctl --root="$s" enable getty@tty1.service remote-fs.target >/dev/null 2>&1
	# A stand-in for userconf-pi's userconfig.service, which Raspberry Pi OS
	# enables until a user is set up: it waits on tty8 for someone to type
	# a user name, so multi-user.target is never reached.
	cat >"$s/usr/lib/systemd/system/userconfig.service" <<-'EOF'
	[Unit]
	Description=User configuration dialog (stand-in for userconf-pi's)
	After=systemd-user-sessions.service

	[Service]
	Type=oneshot
	ExecStart=/bin/sh -c 'echo "Please enter new username:" >/dev/tty8; read -r name </dev/tty8 || exec sleep infinity'

	[Install]
	WantedBy=multi-user.target
	EOF
	systemctl --root="$s" enable userconfig.service >/dev/null 2>&1
	# What systemd-firstboot would otherwise ask for on the serial console.
	ln -sf /usr/share/zoneinfo/Etc/UTC "$s/etc/localtime"
	echo Etc/UTC >"$s/etc/timezone"
	echo LANG=C.UTF-8 >"$s/etc/default/locale"
	echo LANG=C.UTF-8 >"$s/etc/locale.conf"
	# udev's and libc-bin's triggers.
	if command -v systemd-hwdb >/dev/null; then
		systemd-hwdb --root="$s" update
	fi
	local q=qemu-${QEMU_ARCH}-static
	if command -v "$q" >/dev/null; then
		"$q" "$s/sbin/ldconfig" -r "$s"
	fi
	echo raspberrypi >"$s/etc/hostname"
	printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\traspberrypi\n' >"$s/etc/hosts"
	cat >"$s/etc/fstab" <<-EOF
	proc            /proc           proc    defaults          0       0
	PARTUUID=$DISKID-01  /boot/firmware  vfat    defaults          0       2
	PARTUUID=$DISKID-02  /               ext4    defaults,noatime  0       1
	EOF
	mkdir -p "$s/boot/firmware"
	printf 'Raspberry Pi reference 2024-11-19\nGenerated using pi-gen, https://github.com/RPi-Distro/pi-gen, imgbake-e2e, stage2\n' >"$s/etc/rpi-issue"
	if [ "$arch" = armhf ]; then
		rm -f "$s/etc/os-release"
		cat >"$s/usr/lib/os-release" <<-EOF
		PRETTY_NAME="Raspbian GNU/Linux 12 (bookworm)"
		NAME="Raspbian GNU/Linux"
		VERSION_ID="12"
		VERSION="12 (bookworm)"
		VERSION_CODENAME=bookworm
		ID=raspbian
		ID_LIKE=debian
		HOME_URL="http://www.raspbian.org/"
		SUPPORT_URL="http://www.raspbian.org/RaspbianForums"
		BUG_REPORT_URL="http://www.raspbian.org/RaspbianBugs"
		EOF
		ln -s ../usr/lib/os-release "$s/etc/os-release"
	fi
}

make_initrd() { # make_initrd ROOT INITRDTREE KVER
	local s=$1 i=$2 kv=$3 m
	mkdir -p "$i/newroot" "$i/proc" "$i/sys" "$i/dev" "$i/lib/modules"
	for m in sh mount umount switch_root insmod mkdir cat sleep od tr sed echo ls; do
		ln -sf busybox "$i/bin/$m"
	done
	: >"$i/modules"
	# shellcheck disable=SC2086
	for m in $INITRD_MODULES; do
		modprobe -d "$s" -S "$kv" --show-depends "$m" | awk '$1=="insmod"{print $2}'
	done | awk '!seen[$0]++' | while read -r m; do
		cp "$m" "$i/lib/modules/"
		basename "$m" >>"$i/modules"
	done
	cp "$(dirname "$0")/initrd-init.sh" "$i/init"
	chmod 0755 "$i/init"
	(cd "$i" && find . -path ./usr/share -prune -o -print | LC_ALL=C sort |
		cpio -o -H newc --quiet -R 0:0 | gzip -9n >"$i.img")
}

boot_files() { # boot_files ARCH BOOTDIR
	local arch=$1 b=$2
	# The Bookworm cmdline.txt, less init=/usr/lib/raspberrypi-sys-mods/firstboot
	# (raspberrypi-sys-mods is not in Debian). The firmware replaces serial0
	# with the Pi's UART; QEMU's test appends console=ttyAMA0 for the same.
	echo "console=serial0,115200 console=tty1 root=PARTUUID=$DISKID-02 rootfstype=ext4 fsck.repair=yes rootwait quiet" >"$b/cmdline.txt"
	{
		printf '# For more options and information see\n# http://rptl.io/configtxt\n\n'
		printf 'dtparam=audio=on\ncamera_auto_detect=1\ndisplay_auto_detect=1\n'
		if [ "$arch" = arm64 ]; then
			printf '\n# Automatically load initramfs files, if found\nauto_initramfs=1\n'
			printf '\n# Run in 64-bit mode\narm_64bit=1\n'
		else
			printf '\narm_64bit=0\nkernel=%s\ninitramfs %s followkernel\n' "$KERNEL" "$INITRD"
		fi
		printf '\ndtoverlay=vc4-kms-v3d\nmax_framebuffers=2\ndisable_overscan=1\n\n[cm4]\notg_mode=1\n\n[all]\n'
	} >"$b/config.txt"
	printf 'Raspberry Pi reference 2024-11-19\nGenerated using pi-gen, https://github.com/RPi-Distro/pi-gen, imgbake-e2e, stage2\n' >"$b/issue.txt"
}

make_disk() { # make_disk WORKDIR OUT
	local w=$1 out=$2 f
	local bootsz=$((512 * 1024 * 1024)) rootmb
	rootmb=$(du -sm "$w/root" | cut -f1)
	rootmb=$((rootmb * 13 / 10 + 128))
	rm -f "$w/boot.fat" "$w/root.ext4"
	mkfs.vfat -F 32 -n bootfs -i "${DISKID^^}" -C "$w/boot.fat" $((bootsz / 1024)) >/dev/null 2>&1
	for f in "$w"/boot/*; do
		mcopy -i "$w/boot.fat" "$f" "::$(basename "$f")"
	done
	mkfs.ext4 -q -F -b 4096 -O ^64bit,^huge_file -L rootfs -d "$w/root" \
		-E root_owner=0:0 "$w/root.ext4" "${rootmb}M" >/dev/null 2>&1
	local start2=$((8192 + bootsz / 512))
	local total=$((start2 * 512 + rootmb * 1024 * 1024))
	rm -f "$out"
	truncate -s "$total" "$out"
	sfdisk -q "$out" <<-EOF
	label: dos
	label-id: 0x$DISKID
	start=8192, size=$((bootsz / 512)), type=c
	start=$start2, type=83
	EOF
	dd if="$w/boot.fat" of="$out" bs=1M seek=4 conv=notrunc,sparse status=none
	dd if="$w/root.ext4" of="$out" bs=1M seek=$((start2 / 2048)) conv=notrunc,sparse status=none
}

case "${1:-}" in
fetch) [ $# = 2 ] || die "usage: mkbase.sh fetch ARCH"; fetch "$2" ;;
build) [ $# -ge 3 ] || die "usage: mkbase.sh build ARCH OUT.img [EXTRA]"; build "$2" "$3" "${4:-}" ;;
*) die "usage: mkbase.sh fetch ARCH | build ARCH OUT.img [EXTRA]" ;;
esac
