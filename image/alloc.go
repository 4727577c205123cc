package image

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/imgbake/imgbake/image/bmap"
	"github.com/imgbake/imgbake/image/ext4"
	"github.com/imgbake/imgbake/image/fat"
)

// AllocatedRanges returns the byte ranges of the whole-disk image img (size
// bytes) that hold data, sorted and merged: everything before the first
// partition (partition table, boot loaders such as U-Boot), the GPT backup,
// FAT metadata and allocated clusters, ext4 allocated blocks, and the whole
// of any partition whose filesystem is unknown. A flash or bmap writes
// exactly these.
func AllocatedRanges(img io.ReaderAt, size int64) ([]bmap.ByteRange, error) {
	t, err := readTable(img, size)
	if err != nil {
		return nil, err
	}
	first := size
	for _, p := range t.parts {
		first = min(first, p.Start)
	}
	rs := []bmap.ByteRange{{Offset: 0, Length: first}}
	if t.kind == "gpt" {
		rs = append(rs, bmap.ByteRange{Offset: size - 33*sector, Length: 33 * sector})
	}
	for _, p := range t.parts {
		probeFS(img, &p)
		prs, err := partRanges(img, p)
		if err != nil {
			return nil, fmt.Errorf("listing allocated blocks of partition %d: %w", p.Number, err)
		}
		rs = append(rs, prs...)
	}
	return mergeRanges(rs), nil
}

// partRanges lists the allocated ranges of one partition, in image offsets.
func partRanges(img io.ReaderAt, p Partition) ([]bmap.ByteRange, error) {
	var rs []bmap.ByteRange
	switch {
	case p.FS == "ext4":
		fsys, err := ext4.Open(img, p.Start, p.Size, &ext4.Options{ReadOnly: true})
		if err != nil {
			return nil, err
		}
		ers, err := fsys.AllocatedRanges()
		if err != nil {
			return nil, err
		}
		for _, r := range ers {
			rs = append(rs, bmap.ByteRange{Offset: p.Start + r.Off, Length: r.Len})
		}
	case strings.HasPrefix(p.FS, "fat"):
		fsys, err := fat.Open(img, p.Start, p.Size, true, time.Time{})
		if err != nil {
			return nil, err
		}
		for _, r := range fsys.AllocatedRanges() {
			rs = append(rs, bmap.ByteRange{Offset: p.Start + r.Off, Length: r.Len})
		}
	default:
		rs = append(rs, bmap.ByteRange{Offset: p.Start, Length: p.Size})
	}
	return rs, nil
}

// mergeRanges sorts ranges and joins overlapping or touching ones.
func mergeRanges(rs []bmap.ByteRange) []bmap.ByteRange {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Offset < rs[j].Offset })
	var out []bmap.ByteRange
	for _, r := range rs {
		if r.Length <= 0 {
			continue
		}
		if n := len(out); n > 0 && r.Offset <= out[n-1].End() {
			out[n-1].Length = max(out[n-1].End(), r.End()) - out[n-1].Offset
			continue
		}
		out = append(out, r)
	}
	return out
}
