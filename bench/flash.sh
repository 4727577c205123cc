#!/bin/sh
# bench/flash.sh: flash N cards at once vs one card, on loop devices throttled
# like SD cards. Goal: N cards take <= 1.2x the time of one.
#
# There is no device-mapper (dm-delay) or nbd module here, so the throttle
# is the cgroup v1 blkio controller: imgbake runs in a cgroup whose
# blkio.throttle.{write,read}_bps_device limit each loop device separately
# (flash writes with O_DIRECT, which the throttle sees). Needs root, losetup
# and /sys/fs/cgroup/blkio.
# Usage: bench/flash.sh [cards]   (WRITE_MBS, default 20; READ_MBS, default 40;
#                                  IMAGE_MIB, default 96)
set -eu
cd "$(dirname "$0")/.."
N=${1:-3}
WRITE_MBS=${WRITE_MBS:-20}
READ_MBS=${READ_MBS:-40}
IMAGE_MIB=${IMAGE_MIB:-96}
[ "$(id -u)" = 0 ] || { echo "bench/flash.sh needs root (loop devices, cgroups)" >&2; exit 1; }
CG=/sys/fs/cgroup/blkio/imgbake-bench-$$
[ -d /sys/fs/cgroup/blkio ] || { echo "no cgroup v1 blkio controller at /sys/fs/cgroup/blkio" >&2; exit 1; }
W=$(mktemp -d "${TMPDIR:-/tmp}/imgbake-flash-bench.XXXXXX")
loops=""
cleanup() {
	for l in $loops; do losetup -d "$l" 2>/dev/null || true; done
	rmdir "$CG" 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT INT TERM

go build -o "$W/imgbake" ./cmd/imgbake
mkdir "$CG"
cd "$W"
"$W/imgbake" init >/dev/null
mkdir out
i=1
while [ "$i" -le "$N" ]; do
	head -c "${IMAGE_MIB}M" /dev/urandom > "out/k$i.img"
	truncate -s "$((IMAGE_MIB + 64))M" "card$i"
	l=$(losetup -f --show "card$i")
	loops="$loops $l"
	mm=$(lsblk -dno MAJ:MIN "$l" | tr -d ' ')
	echo "$mm $((WRITE_MBS * 1000000))" > "$CG/blkio.throttle.write_bps_device"
	echo "$mm $((READ_MBS * 1000000))" > "$CG/blkio.throttle.read_bps_device"
	i=$((i + 1))
done

# throttled CMD...: run CMD in the cgroup, print its wall time.
throttled() {
	s=$(date +%s.%N)
	sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' sh "$CG" "$@" >"$W/out.txt" 2>&1 || { cat "$W/out.txt" >&2; exit 1; }
	awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'
}
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
set -- $loops
one=$(throttled "$W/imgbake" flash --yes --force k1 "$1")
pairs=""
i=1
for l in $loops; do pairs="$pairs k$i=$l"; i=$((i + 1)); done
# shellcheck disable=SC2086 # one argument per card
many=$(throttled "$W/imgbake" flash --yes --force $pairs)
echo "machine load: $load_start at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (1, 5, 15 min) on $(nproc) CPUs"
echo "cards: loop devices throttled to $WRITE_MBS MB/s write, $READ_MBS MB/s read; image ${IMAGE_MIB} MiB (whole, written then read back)"
echo "one card:           ${one}s"
echo "$N cards at once:     ${many}s   = $(awk -v a="$many" -v b="$one" 'BEGIN { printf "%.2f", a / b }')x one card   (goal <= 1.2x)"
