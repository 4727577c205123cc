package image

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"
)

// memImage is an in-memory disk image that grows on write up to limit
// bytes; a write beyond is recorded in outside.
type memImage struct {
	b       []byte
	limit   int64
	outside []int64
}

func (m *memImage) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(m.b)) {
		return 0, errShortRead
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, errShortRead
	}
	return n, nil
}

func (m *memImage) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > m.limit {
		m.outside = append(m.outside, off)
		return 0, errShortRead
	}
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

var errShortRead = bytes.ErrTooLarge

// sealGPT recomputes the GPT header's and entry array's CRCs (when the
// fields point inside data) so that the fuzzer reaches the parser behind
// the checksums instead of stopping at them.
func sealGPT(data []byte) {
	if len(data) < 2*sector || !bytes.Equal(data[sector:sector+8], []byte("EFI PART")) {
		return
	}
	h := data[sector : 2*sector]
	entLBA := binary.LittleEndian.Uint64(h[72:])
	n, esz := uint64(binary.LittleEndian.Uint32(h[80:])), uint64(binary.LittleEndian.Uint32(h[84:]))
	if entLBA < uint64(len(data))/sector && n*esz <= uint64(len(data)) && entLBA*sector+n*esz <= uint64(len(data)) {
		binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(data[entLBA*sector:entLBA*sector+n*esz]))
	}
	if hs := binary.LittleEndian.Uint32(h[12:]); hs >= 92 && hs <= sector {
		binary.LittleEndian.PutUint32(h[16:], 0)
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:hs]))
	}
}

// mbrSeed is a 1 MiB image with an RPi-OS-like MBR: FAT at 4 MiB... scaled
// down: p1 FAT at sector 16 (64 KiB), p2 Linux after it to the end.
func mbrSeed() []byte {
	b := make([]byte, 1<<20)
	put := func(i int, typ byte, start, n uint32) {
		e := b[446+16*i:]
		e[4] = typ
		binary.LittleEndian.PutUint32(e[8:], start)
		binary.LittleEndian.PutUint32(e[12:], n)
	}
	binary.LittleEndian.PutUint32(b[440:], 0x1234abcd)
	put(0, 0x0c, 16, 128)
	put(1, 0x83, 144, 2048-144)
	b[510], b[511] = 0x55, 0xaa
	return b
}

// gptSeed is a 1 MiB image with a protective MBR and a GPT of two
// partitions (the last one growable).
func gptSeed() []byte {
	b := make([]byte, 1<<20)
	e := b[446:]
	e[4] = 0xee
	binary.LittleEndian.PutUint32(e[8:], 1)
	binary.LittleEndian.PutUint32(e[12:], 2047)
	b[510], b[511] = 0x55, 0xaa
	h := b[sector:]
	copy(h, "EFI PART")
	binary.LittleEndian.PutUint32(h[8:], 0x10000)
	binary.LittleEndian.PutUint32(h[12:], 92)
	binary.LittleEndian.PutUint64(h[24:], 1)
	binary.LittleEndian.PutUint64(h[32:], 2047)
	binary.LittleEndian.PutUint64(h[40:], 34)
	binary.LittleEndian.PutUint64(h[48:], 2047-33)
	copy(h[56:], "0123456789abcdef")
	binary.LittleEndian.PutUint64(h[72:], 2)
	binary.LittleEndian.PutUint32(h[80:], 4)
	binary.LittleEndian.PutUint32(h[84:], 128)
	ents := b[2*sector:]
	for i, r := range [][2]uint64{{34, 161}, {162, 2047 - 34}} {
		en := ents[128*i:]
		copy(en, "typetypetypetype")
		copy(en[16:], "uniqueuniqueuniq")
		en[31] = byte(i)
		binary.LittleEndian.PutUint64(en[32:], r[0])
		binary.LittleEndian.PutUint64(en[40:], r[1])
		copy(en[56:], []byte{'r', 0, 'o', 0, 'o', 0, 't', 0})
	}
	sealGPT(b)
	return b
}

// FuzzPartitionTable reads MBR and GPT tables from untrusted bytes (a
// downloaded base image): every partition found must lie inside the
// image, after the first sector, without overlaps; growing the last
// partition must give a table that reads back with that partition ending
// at the new end and the others unchanged.
func FuzzPartitionTable(f *testing.F) {
	// Only the first sectors matter to the parser: fuzz those, on a fixed
	// 1 MiB image.
	const head = 4 << 10
	f.Add(mbrSeed()[:head])
	f.Add(gptSeed()[:head])
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > head {
			return
		}
		img := make([]byte, 1<<20)
		copy(img, data)
		sealGPT(img)
		size := int64(len(img))
		grown := size + 4<<20
		m := &memImage{b: img, limit: grown}
		tab, err := readTable(m, size)
		if err != nil {
			return
		}
		last := -1
		var lastStart int64
		for _, p := range tab.parts {
			if p.Start < sector || p.Size <= 0 || p.Start+p.Size > size || p.Start+p.Size < p.Start {
				t.Fatalf("partition %d (%d bytes at %d) outside the %d-byte image", p.Number, p.Size, p.Start, size)
			}
			if p.Start >= lastStart {
				last, lastStart = p.Number, p.Start
			}
		}
		if last < 0 {
			return
		}
		before := append([]Partition(nil), tab.parts...)
		newSize, err := tab.growLast(m, last, grown)
		if len(m.outside) > 0 {
			t.Fatalf("growing to %d bytes wrote at %v, outside the image", grown, m.outside)
		}
		if err != nil {
			return
		}
		if int64(len(m.b)) < grown {
			m.b = append(m.b, make([]byte, grown-int64(len(m.b)))...)
		}
		again, err := readTable(m, grown)
		if err != nil {
			t.Fatalf("table unreadable after growing partition %d: %v", last, err)
		}
		if len(again.parts) != len(before) {
			t.Fatalf("growing changed the partitions: %v -> %v", before, again.parts)
		}
		for i, p := range again.parts {
			want := before[i]
			if p.Number == last {
				want.Size = newSize
				if p.Start+p.Size > grown || p.Size < before[i].Size {
					t.Fatalf("grown partition %v does not end inside the %d-byte image", p, grown)
				}
			}
			if p != want {
				t.Fatalf("partition after growing %+v, want %+v", p, want)
			}
		}
	})
}
