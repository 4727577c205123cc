#!/bin/sh
# Compare imgbake's netboot servers with the usual Debian ones, same client,
# same machine, same run:
#   TFTP: atftp (blksize 1024, tsize) fetching a 30 MiB file from
#         netboot/tftp and from dnsmasq's TFTP server;
#   NBD:  qemu-img convert reading and writing a 128 MiB export on
#         netboot/nbd and on nbd-server.
# A ratio above 1 means imgbake is faster. Needs root (dnsmasq listens on
# port 69) and: apt-get install atftp dnsmasq nbd-server qemu-utils
# Usage: bench/netboot.sh [runs per comparison, default 5]
set -eu
cd "$(dirname "$0")/.."
n=${1:-5}
go test ./netboot/tftp -run '^$' -bench VsDnsmasq -benchtime "${n}x" -count 1
go test ./netboot/nbd -run '^$' -bench VsNBDServer -benchtime "${n}x" -count 1
