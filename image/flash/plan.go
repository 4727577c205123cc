package flash

import (
	"github.com/imgbake/imgbake/image/bmap"
)

// Check is a range of an image with the sha256 its bytes must have: a
// mapped range of a .bmap, a range of an imgbake manifest, or a range the
// writer computed while writing.
type Check struct {
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
	SHA256 string `json:"sha256"`
}

// End returns the offset just past the range.
func (c Check) End() int64 { return c.Offset + c.Length }

// ChecksFromBmap returns the mapped ranges of m as checks (a range without
// a checksum in the .bmap gets an empty SHA256, filled in when written).
// Maps with a checksum type other than sha256 give empty sums too: the
// writer then computes sha256 itself.
func ChecksFromBmap(m *bmap.Map) []Check {
	out := make([]Check, len(m.Ranges))
	for i, r := range m.Ranges {
		br := m.ByteRange(r)
		out[i] = Check{Offset: br.Offset, Length: br.Length}
		if m.ChecksumType == "sha256" {
			out[i].SHA256 = r.SHA256
		}
	}
	return out
}

// mergeGap is the largest gap between two mapped ranges that is written
// rather than skipped: SD cards and USB sticks are slow at small scattered
// writes (each costs a flash page program, often a read-modify-write of a
// whole erase block), and writing the image's own bytes in a small gap is
// always correct.
const mergeGap = 128 << 10

// extent is a contiguous run of the image that is written.
type extent struct{ off, end int64 }

// extents merges the checks (sorted, not overlapping) into write extents,
// joining neighbours whose gap is at most mergeGap.
func extents(checks []Check) []extent {
	var out []extent
	for _, c := range checks {
		if c.Length <= 0 {
			continue
		}
		if n := len(out); n > 0 && c.Offset-out[n-1].end <= mergeGap {
			out[n-1].end = max(out[n-1].end, c.End())
			continue
		}
		out = append(out, extent{c.Offset, c.End()})
	}
	return out
}

// WriteSize returns the number of bytes Write writes for an image of size
// bytes with the map m: the mapped ranges plus the small gaps it fills
// between them; without a map the image size (0 when unknown, size < 0).
func WriteSize(m *bmap.Map, size int64) int64 {
	if m == nil {
		return max(size, 0)
	}
	var n int64
	for _, e := range extents(ChecksFromBmap(m)) {
		n += e.end - e.off
	}
	return n
}
