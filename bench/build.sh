#!/bin/sh
# bench/build.sh: build 10 node images from one .xz base with the imgbake
# binary and compare, in the same run:
#   first node (cold cache: decompress + build)  vs  xz -dc of the base       (goal <= 1.1x)
#   each further node on ext4 (warm cache)       vs  cp --sparse=always       (goal <= 1.0x)
#     (also one node at a time, -j 1, and against cp --sparse=always + sync,
#     which is durable as a build is; and one node against one copy, each
#     alone after a sync)
#   each further node on an XFS loop mount       vs  cp --reflink=always      (goal <= 0.2 s)
#   build --compress zst / xz                    vs  zstd -T0 -3 / xz -T0 -6 of the raw image
# The base is the Raspberry Pi OS Bookworm arm64 test fixture grown to
# SIZE_MIB (default 2200) MiB with FILL_MIB (default 880) MiB of real system
# files added to its root filesystem (about 900 MiB of data in all).
# NO_XZ=1 skips the xz compressors (minutes each); the XFS part needs root
# (loop mount) and is skipped with a message otherwise. PROFILE=DIR keeps,
# for the first node, the further nodes on ext4 and those on XFS, a CPU
# profile (DIR/first.pprof, ext4.pprof, xfs.pprof: go tool pprof -top
# imgbake DIR/first.pprof) and the --verbose log, which has the wall time
# of each phase (DIR/first.log...); the imgbake binary is kept as DIR/imgbake.
# Needs: go, xz, zstd, debugfs, sfdisk, tar, xfsprogs. Usage: bench/build.sh [nodes]
set -eu
cd "$(dirname "$0")/.."
NODES=${1:-10}
SIZE_MIB=${SIZE_MIB:-2200}
FILL_MIB=${FILL_MIB:-880}
W=$(mktemp -d "${TMPDIR:-/tmp}/imgbake-bench.XXXXXX")
cleanup() {
	if mountpoint -q "$W/xfs" 2>/dev/null; then umount "$W/xfs"; fi
	[ "${KEEP:-}" = 1 ] && echo "keeping $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT INT TERM

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "building imgbake in $W" >&2
go build -o "$W/imgbake" ./cmd/imgbake

# The compressed base is cached next to the test fixtures (compressing it
# takes minutes); delete it to rebuild it.
CACHE=${IMGBAKE_FIXTURE_CACHE:-${TMPDIR:-/tmp}/imgbake-fixtures-$(id -u)}
BASE="$CACHE/bench-base-${SIZE_MIB}m-$FILL_MIB.img.xz"
if [ ! -s "$BASE" ] || [ ! -s "$BASE.k3s" ]; then
	echo "making the base image $BASE" >&2
	mkdir -p "$CACHE"
	IMGBAKE_BENCH_BASE="$W/base.img" IMGBAKE_BENCH_SIZE=$((SIZE_MIB << 20)) go test ./bench -run '^TestMakeBase$' -count=1 >/dev/null
	# Root partition: the last one; e2fsprogs take "image?offset=BYTES".
	start=$(sfdisk -d "$W/base.img" | awk -F'[=,]' '/start=/ { s = $2 } END { gsub(/ /, "", s); print s }')
	root="$W/base.img?offset=$((start * 512))"
	# Up to FILL_MIB of real files, but leave the root filesystem 48 MiB free
	# (a stock image has room to spare; filling it would make every build grow).
	free=$(dumpe2fs -h "$root" 2>/dev/null | awk -F: '/^Free blocks/ { f = $2 } /^Block size/ { b = $2 } END { print int(f * b / 1048576) }')
	fill=$(( FILL_MIB < free - 48 ? FILL_MIB : free - 48 ))
	tar cf - /usr/lib /usr/share /usr/bin 2>/dev/null | head -c "${fill}M" > "$W/filler" || true
	debugfs -w -R "write $W/filler /usr/share/bench-filler.tar" "$root" >/dev/null 2>&1
	e2fsck -fn "$root" >/dev/null 2>&1
	rm "$W/filler"
	echo "compressing the base (xz -T0, ${fill} MiB of data)" >&2
	xz -T0 -c "$W/base.img" > "$BASE.tmp"
	mv "$W/base.img.k3s" "$BASE.k3s"
	mv "$BASE.tmp" "$BASE"
	rm "$W/base.img"
fi
cp "$BASE" "$W/base.img.xz"
cp "$BASE.k3s" "$W/base.img.k3s"

# measure CMD...: run CMD, print "WALL CPU" seconds (CPU = user + sys, of
# the command and its children; "-" without /usr/bin/time). CPU time tells
# how the work compares when other jobs load the machine.
measure() {
	if [ -x /usr/bin/time ]; then
		/usr/bin/time -f "%e %U %S" -o "$W/time" "$@" >/dev/null
		awk '{ printf "%.2f %.2f", $1, $2 + $3 }' "$W/time"
	else
		t=$(now); "$@" >/dev/null; printf '%s -' "$(since "$t")"
	fi
}
field() { echo "$1" | cut -d' ' -f"$2"; }
# pmeasure NAME CMD...: measure CMD; with PROFILE, CMD (an imgbake command)
# also writes a CPU profile and a --verbose log named NAME into $PROFILE.
pmeasure() {
	name=$1
	shift
	if [ -n "${PROFILE:-}" ]; then
		measure env IMGBAKE_CPUPROFILE="$PROFILE/$name.pprof" "$@" -v 2>"$PROFILE/$name.log"
	else
		measure "$@"
	fi
}
if [ -n "${PROFILE:-}" ]; then
	mkdir -p "$PROFILE"
	cp "$W/imgbake" "$PROFILE/imgbake"
fi
per() { awk -v a="$1" -v n="$extra_n" 'BEGIN { if (a == "-") print "-"; else printf "%.2f", a / n }'; }

load() { cut -d' ' -f1-3 /proc/loadavg; }
load_start=$(load)
xz_t=$(measure sh -c 'xz -dc "$1" > "$2"' sh "$W/base.img.xz" "$W/xzdc.img")
rm "$W/xzdc.img"

mkdir "$W/c"
cd "$W/c"
"$W/imgbake" init --base ../base.img.xz --server 10.0.0.1 >/dev/null
set -- "$W/imgbake" build --profile worker --k3s-binary "$W/base.img.k3s" --cache-dir "$W/c/cache"

first_t=$(pmeasure first "$@" n1)
extra=""
i=2
while [ "$i" -le "$NODES" ]; do extra="$extra n$i"; i=$((i + 1)); done
extra_n=$((NODES - 1))
cached=$(ls "$W"/c/cache/base/*.img)
# cploop [sync|end]: as many copies of the base as further nodes, one after
# the other, like the builds (the same page cache and writeback pressure):
# prints the wall and CPU time per copy. With sync each copy is synced
# ("sync FILE"), with end all of them once after the last, in the time; the
# plain copies leave gigabytes to write back, which a sync after the loop,
# out of the time, writes before the next measurement. What a copy costs
# depends much on the state of the page cache (reclaim, writeback of what
# came before), so the plain copies are measured before the builds and
# after them.
cploop() {
	t=$(measure sh -c 'i=1; while [ "$i" -le "$2" ]; do cp --sparse=always "$1" "$3.$i"; [ "$4" != sync ] || sync "$3.$i"; i=$((i + 1)); done; [ "$4" != end ] || sync' sh "$cached" "$extra_n" "$W/cp.img" "${1:-}")
	sync
	rm -f "$W"/cp.img.*
	echo "$(per "$(field "$t" 1)") $(per "$(field "$t" 2)")"
}
cpa_t=$(cploop)
# shellcheck disable=SC2086 # one argument per node
extra_t=$(pmeasure ext4 "$@" $extra)
# The same nodes again, one at a time (-j 1), as the copies are.
rm -f "$W"/c/out/n[2-9]*.img* "$W"/c/out/n1?*.img*
# shellcheck disable=SC2086 # one argument per node
extra1_t=$(measure "$@" -j 1 $extra)
cp_t=$(cploop)
# A build fsyncs its files before it renames them; cp does not. The same
# copies, each synced (sync FILE fsyncs it), say what durability costs.
cps_t=$(cploop sync)
cpe_t=$(cploop end)
rm -f "$W"/cp.img.* "$W"/c/out/n[2-9]*.img "$W"/c/out/n1?*.img
# One copy, then one node, each alone after a sync (nothing dirty in the
# page cache): cp's best case, since its copy then stays in memory, while a
# build writes its node to the disk before renaming it.
sync
one_cp_t=$(measure cp --sparse=always "$cached" "$W/cp1.img")
rm -f "$W/cp1.img" "$W"/c/out/n2.img*
sync
one_t=$(measure "$@" n2)
rm -f "$W"/c/out/n2.img

# The same further nodes on XFS with reflinks: the cache (decompressed base
# and its checksums) is copied onto an XFS loop mount.
xfs=""
if [ "$(id -u)" = 0 ] && truncate -s 8G "$W/xfs.img" && mkfs.xfs -q -m reflink=1 "$W/xfs.img" &&
	mkdir "$W/xfs" && mount -o loop "$W/xfs.img" "$W/xfs" 2>"$W/mount.err"; then
	mkdir "$W/xfs/c"
	cp "$W/c/imgbake.yaml" "$W/c/imgbake.secrets.yaml" "$W/xfs/c/"
	sed -i "s|\.\./base.img.xz|$W/base.img.xz|" "$W/xfs/c/imgbake.yaml"
	cp -a --sparse=always "$W/c/cache" "$W/xfs/c/cache"
	cd "$W/xfs/c"
	set -- "$W/imgbake" build --profile worker --k3s-binary "$W/base.img.k3s" --cache-dir "$W/xfs/c/cache"
	# shellcheck disable=SC2086 # one argument per node
	xfs_t=$(pmeasure xfs "$@" $extra)
	xcached=$(ls "$W"/xfs/c/cache/base/*.img)
	ref_t=$(measure cp --reflink=always "$xcached" "$W/xfs/cp.img")
	xfs=1
	cd "$W/c"
else
	echo "XFS part skipped: needs root and a loop mount ($(cat "$W/mount.err" 2>/dev/null))" >&2
fi

# Compressors, on the first node's raw image.
zst_t=$(measure "$@" --compress zst z1)
zstd_t=$(measure sh -c 'zstd -q -T0 -3 -c "$1" > "$2"' sh "$W/c/out/n1.img" "$W/n1.img.zst")
if [ "${NO_XZ:-}" != 1 ]; then
	xzc_t=$(measure "$@" --compress xz x1)
	xzref_t=$(measure sh -c 'xz -T0 -6 -c "$1" > "$2"' sh "$W/c/out/n1.img" "$W/n1.img.xz")
fi
load_end=$(load)

rat() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
size() { du -h --apparent-size "$1" | cut -f1; }
row() { printf '%-40s %7ss %7ss   %s\n' "$1" "$(field "$2" 1)" "$(field "$2" 2)" "${3:-}"; }
echo "machine load: $load_start at the start, $load_end at the end (1, 5, 15 min) on $(nproc) CPUs"
echo "base: $(size "$cached") raw, $(du -h "$cached" | cut -f1) of data, $(du -h "$W/base.img.xz" | cut -f1) xz"
printf '%-40s %8s %8s\n' "" wall cpu
row "xz -dc of the base" "$xz_t"
row "first node (cold cache, from .xz)" "$first_t" "= $(rat "$(field "$first_t" 1)" "$(field "$xz_t" 1)")x xz -dc wall, $(rat "$(field "$first_t" 2)" "$(field "$xz_t" 2)")x cpu   (goal <= 1.1x)"
row "cp --sparse=always of the raw base" "$cpa_t" "(per copy, $extra_n copies in a row, before the builds)"
row "  the same after the builds" "$cp_t"
pw=$(per "$(field "$extra_t" 1)"); pc=$(per "$(field "$extra_t" 2)")
row "per further node on ext4 ($extra_n nodes)" "$pw $pc" "= $(rat "$pw" "$(field "$cpa_t" 1)")x and $(rat "$pw" "$(field "$cp_t" 1)")x cp wall (before, after)   (goal <= 1.0x)"
pw1=$(per "$(field "$extra1_t" 1)"); pc1=$(per "$(field "$extra1_t" 2)")
row "  the same, one at a time (-j 1)" "$pw1 $pc1" "= $(rat "$pw1" "$(field "$cpa_t" 1)")x and $(rat "$pw1" "$(field "$cp_t" 1)")x cp wall"
row "cp --sparse=always + sync of the copy" "$cps_t" "(per copy: durable, as a build is)"
row "  per further node on ext4 against it" "$pw $pc" "= $(rat "$pw" "$(field "$cps_t" 1)")x wall (-j 1: $(rat "$pw1" "$(field "$cps_t" 1)")x)"
row "cp --sparse=always in a row, one sync" "$cpe_t" "(per copy: the copies' writeback included)"
row "  per further node on ext4 against it" "$pw $pc" "= $(rat "$pw" "$(field "$cpe_t" 1)")x wall (-j 1: $(rat "$pw1" "$(field "$cpe_t" 1)")x)"
row "one cp --sparse=always, alone after sync" "$one_cp_t" "(not durable: the copy stays in memory)"
row "  one further node, alone after sync" "$one_t" "= $(rat "$(field "$one_t" 1)" "$(field "$one_cp_t" 1)")x that cp, $(rat "$(field "$one_t" 1)" "$(field "$cps_t" 1)")x cp + sync wall"
if [ -n "$xfs" ]; then
	row "cp --reflink=always on XFS" "$ref_t"
	xw=$(per "$(field "$xfs_t" 1)"); xc=$(per "$(field "$xfs_t" 2)")
	row "per further node on XFS ($extra_n nodes)" "$xw $xc" "(goal <= 0.2 s; cp --reflink: $(field "$ref_t" 1) s)"
fi
echo "$NODES nodes in all on ext4: $(awk -v a="$(field "$first_t" 1)" -v b="$(field "$extra_t" 1)" 'BEGIN { printf "%.2f", a + b }')s wall"
row "zstd -T0 -3 of node 1's image" "$zstd_t" "$(size "$W/n1.img.zst")"
row "build --compress zst (build included)" "$zst_t" "$(size "$W/c/out/z1.img.zst"), = $(rat "$(field "$zst_t" 1)" "$(field "$zstd_t" 1)")x zstd wall"
if [ "${NO_XZ:-}" != 1 ]; then
	row "xz -T0 -6 of node 1's image" "$xzref_t" "$(size "$W/n1.img.xz")"
	row "build --compress xz (build included)" "$xzc_t" "$(size "$W/c/out/x1.img.xz"), = $(rat "$(field "$xzc_t" 1)" "$(field "$xzref_t" 1)")x xz wall"
fi
