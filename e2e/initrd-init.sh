#!/bin/sh
# /init of the boot-test initramfs (built by mkbase.sh): load the modules the
# kernel needs to see a virtio disk and ext4, find root= (PARTUUID=<disk
# id>-<nn> from the MBR signature, or a /dev path), mount it as the kernel
# would (ro unless rw is given) and switch to its init.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules); do
	insmod "/lib/modules/$m" || echo "initrd: insmod $m failed"
done

root= fstype=auto opts=ro init=/sbin/init
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	root=*) root=${arg#root=} ;;
	rootfstype=*) fstype=${arg#rootfstype=} ;;
	init=*) init=${arg#init=} ;;
	rw) opts=rw ;;
	ro) opts=ro ;;
	esac
done

find_root() {
	case "$root" in
	PARTUUID=*)
		want=${root#PARTUUID=}
		id=${want%-*} n=${want##*-}
		n=${n#0}
		for d in /sys/block/*; do
			d=${d##*/}
			[ -b "/dev/$d" ] || continue
			sig=$(od -An -tx4 -j440 -N4 "/dev/$d" 2>/dev/null | tr -d ' ')
			[ "$sig" = "$id" ] || continue
			for p in "/dev/$d$n" "/dev/${d}p$n"; do
				[ -b "$p" ] && { echo "$p"; return 0; }
			done
		done ;;
	/dev/*) [ -b "$root" ] && { echo "$root"; return 0; } ;;
	esac
	return 1
}

i=0
until dev=$(find_root); do
	i=$((i + 1))
	if [ $i -gt 300 ]; then
		echo "initrd: root $root not found; dropping to a shell"
		exec sh
	fi
	sleep 0.1
done
if ! mount -t "$fstype" -o "$opts" "$dev" /newroot; then
	echo "initrd: mounting $dev failed; dropping to a shell"
	exec sh
fi
mount -o move /dev /newroot/dev
mount -o move /sys /newroot/sys
mount -o move /proc /newroot/proc
exec switch_root /newroot "$init"
