#!/bin/sh
# bench/build.sh: build 10 node images from one .xz base with the imgbake
# binary and compare, in the same run:
#   first node (cold cache: decompress + build)  vs  xz -dc of the base   (goal <= 1.2x)
#   each extra node (warm cache)                 vs  cp --sparse=always   (goal <= 1.5x)
#                                                    of the decompressed image
# The base is the Raspberry Pi OS Bookworm arm64 test fixture with FILL_MIB
# (default 300) MiB of real system files added to its root filesystem, so
# that decompression has real data to chew on.
# Needs: go, xz, debugfs, sfdisk, tar. Usage: bench/build.sh [nodes]
set -eu
cd "$(dirname "$0")/.."
NODES=${1:-10}
FILL_MIB=${FILL_MIB:-300}
W=$(mktemp -d "${TMPDIR:-/tmp}/imgbake-bench.XXXXXX")
[ "${KEEP:-}" = 1 ] && echo "keeping $W" >&2 || trap 'rm -rf "$W"' EXIT INT TERM

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo "building imgbake in $W" >&2
go build -o "$W/imgbake" ./cmd/imgbake

# The compressed base is cached next to the test fixtures (compressing it
# takes minutes); delete it to rebuild it.
CACHE=${IMGBAKE_FIXTURE_CACHE:-${TMPDIR:-/tmp}/imgbake-fixtures-$(id -u)}
BASE="$CACHE/bench-base-$FILL_MIB.img.xz"
if [ ! -s "$BASE" ] || [ ! -s "$BASE.k3s" ]; then
	echo "making the base image $BASE" >&2
	mkdir -p "$CACHE"
	IMGBAKE_BENCH_BASE="$W/base.img" go test ./bench -run '^TestMakeBase$' -count=1 >/dev/null
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

xz_t=$(measure sh -c 'xz -dc "$1" > "$2"' sh "$W/base.img.xz" "$W/xzdc.img")

mkdir "$W/c"
cd "$W/c"
"$W/imgbake" init --base ../base.img.xz --server 10.0.0.1 >/dev/null
set -- "$W/imgbake" build --profile worker --k3s-binary "$W/base.img.k3s" --cache-dir "$W/c/cache"

first_t=$(measure "$@" n1)
extra=""
i=2
while [ "$i" -le "$NODES" ]; do extra="$extra n$i"; i=$((i + 1)); done
extra_n=$((NODES - 1))
# shellcheck disable=SC2086 # one argument per node
extra_t=$(measure "$@" $extra)

cached=$(ls "$W"/c/cache/base/*.img)
cp_t=$(measure cp --sparse=always "$cached" "$W/cp.img")

per() { awk -v a="$1" -v n="$extra_n" 'BEGIN { if (a == "-") print "-"; else printf "%.2f", a / n }'; }
rat() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
echo "machine load: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
echo "base: $(du -h --apparent-size "$W/xzdc.img" | cut -f1) raw, $(du -h "$W/base.img.xz" | cut -f1) xz, $(du -h "$cached" | cut -f1) on disk"
echo "                                 wall     cpu"
echo "xz -dc of the base:            $(field "$xz_t" 1)s  $(field "$xz_t" 2)s"
echo "first node (cold cache):       $(field "$first_t" 1)s  $(field "$first_t" 2)s   = $(rat "$(field "$first_t" 1)" "$(field "$xz_t" 1)")x xz -dc wall, $(rat "$(field "$first_t" 2)" "$(field "$xz_t" 2)")x cpu   (goal <= 1.2x)"
echo "cp --sparse=always of the raw: $(field "$cp_t" 1)s  $(field "$cp_t" 2)s"
pw=$(per "$(field "$extra_t" 1)"); pc=$(per "$(field "$extra_t" 2)")
echo "per extra node ($extra_n nodes):     ${pw}s  ${pc}s   = $(rat "$pw" "$(field "$cp_t" 1)")x cp wall, $(rat "$pc" "$(field "$cp_t" 2)")x cpu   (goal <= 1.5x)"
