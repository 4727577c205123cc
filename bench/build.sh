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

echo "building imgbake and the base image in $W" >&2
go build -o "$W/imgbake" ./cmd/imgbake
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
e2fsck -fn "$root" >/dev/null
rm "$W/filler"
echo "compressing the base (xz -T0, ${fill} MiB of data)" >&2
xz -T0 -k "$W/base.img"
rm "$W/base.img"

t=$(now); xz -dc "$W/base.img.xz" > "$W/xzdc.img"; xz_s=$(since "$t")

mkdir "$W/c"
cd "$W/c"
"$W/imgbake" init --base ../base.img.xz --server 10.0.0.1 >/dev/null
build() { "$W/imgbake" build --profile worker --k3s-binary "$W/base.img.k3s" --cache-dir "$W/c/cache" "$@" >/dev/null; }

t=$(now); build n1; first_s=$(since "$t")
extra=""
i=2
while [ "$i" -le "$NODES" ]; do extra="$extra n$i"; i=$((i + 1)); done
extra_n=$((NODES - 1))
t=$(now)
# shellcheck disable=SC2086 # one argument per node
[ "$extra_n" -gt 0 ] && build $extra
extra_s=$(since "$t")

cached=$(ls "$W"/c/cache/base/*.img)
t=$(now); cp --sparse=always "$cached" "$W/cp.img"; cp_s=$(since "$t")

per=$(awk -v a="$extra_s" -v n="$extra_n" 'BEGIN { printf "%.2f", (n > 0 ? a / n : 0) }')
echo "base: $(du -h --apparent-size "$W/xzdc.img" | cut -f1) raw, $(du -h "$W/base.img.xz" | cut -f1) xz, $(du -h "$cached" | cut -f1) on disk"
echo "xz -dc of the base:            ${xz_s}s"
echo "first node (cold cache):       ${first_s}s  = $(ratio "$first_s" "$xz_s")x xz -dc   (goal <= 1.2x)"
echo "cp --sparse=always of the raw: ${cp_s}s"
echo "per extra node ($extra_n nodes):     ${per}s  = $(ratio "$per" "$cp_s")x cp       (goal <= 1.5x)"
