package bmap

import (
	"bytes"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
	"strings"
)

const header = `<?xml version="1.0" ?>
<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. In other words,
     it lists only those blocks which contain data (boot sector, partition
     table, file-system metadata, files, directories, extents, etc). These
     blocks have to be copied to the target device. The other blocks do not
     contain any useful data and do not have to be copied to the target
     device.

     Written by imgbake from the allocation maps of the image's filesystems,
     in the format of bmap-tools (bmaptool copy reads it). -->

`

// WriteTo writes the map as a bmap file (format 2.0, the layout bmaptool
// create writes), including the checksum of the file itself: the sha256 of
// the file with the checksum's value replaced by zeros.
func (m *Map) WriteTo(w io.Writer) (int64, error) {
	if m.ChecksumType != "sha256" && m.ChecksumType != "" {
		return 0, fmt.Errorf("writing bmap: checksum type %q: only sha256 is written", m.ChecksumType)
	}
	zero := strings.Repeat("0", 64)
	text := m.render(zero)
	h, _ := newHash("sha256")
	h.Write(text)
	sum := hex.EncodeToString(h.Sum(nil))
	text = bytes.Replace(text, []byte(zero), []byte(sum), 1)
	n, err := w.Write(text)
	if err != nil {
		return int64(n), fmt.Errorf("writing bmap: %w", err)
	}
	return int64(n), nil
}

func (m *Map) render(fileSum string) []byte {
	var b bytes.Buffer
	b.WriteString(header)
	blocks := m.BlocksCount()
	mapped := m.MappedBlocks()
	pct := 0.0
	if blocks > 0 {
		pct = float64(mapped) * 100 / float64(blocks)
	}
	fmt.Fprintf(&b, "<bmap version=\"%s\">\n", Version)
	fmt.Fprintf(&b, "    <!-- Image size in bytes: %s -->\n", humanSize(m.ImageSize))
	fmt.Fprintf(&b, "    <ImageSize> %d </ImageSize>\n\n", m.ImageSize)
	fmt.Fprintf(&b, "    <!-- Size of a block in bytes -->\n")
	fmt.Fprintf(&b, "    <BlockSize> %d </BlockSize>\n\n", m.BlockSize)
	fmt.Fprintf(&b, "    <!-- Count of blocks in the image file -->\n")
	fmt.Fprintf(&b, "    <BlocksCount> %d </BlocksCount>\n\n", blocks)
	fmt.Fprintf(&b, "    <!-- Count of mapped blocks: %s or %.1f%% -->\n",
		humanSize(mapped*int64(m.BlockSize)), pct)
	fmt.Fprintf(&b, "    <MappedBlocksCount> %d </MappedBlocksCount>\n\n", mapped)
	fmt.Fprintf(&b, "    <!-- Type of checksum used in this file -->\n")
	fmt.Fprintf(&b, "    <ChecksumType> sha256 </ChecksumType>\n\n")
	fmt.Fprintf(&b, "    <!-- The checksum of this bmap file. When it is calculated, the value of\n")
	fmt.Fprintf(&b, "         the checksum has be zero (all ASCII \"0\" symbols).  -->\n")
	fmt.Fprintf(&b, "    <BmapFileChecksum> %s </BmapFileChecksum>\n\n", fileSum)
	fmt.Fprintf(&b, "    <!-- The block map which consists of elements which may either be a\n")
	fmt.Fprintf(&b, "         range of blocks or a single block. The 'chksum' attribute\n")
	fmt.Fprintf(&b, "         (if present) is the checksum of this blocks range. -->\n")
	b.WriteString("    <BlockMap>\n")
	for _, r := range m.Ranges {
		b.WriteString("        <Range")
		if r.SHA256 != "" {
			fmt.Fprintf(&b, " chksum=\"%s\"", r.SHA256)
		}
		if r.First == r.Last {
			fmt.Fprintf(&b, "> %d </Range>\n", r.First)
		} else {
			fmt.Fprintf(&b, "> %d-%d </Range>\n", r.First, r.Last)
		}
	}
	b.WriteString("    </BlockMap>\n</bmap>\n")
	return b.Bytes()
}

// humanSize formats n bytes the way bmaptool writes them in its comments
// ("9.5 MiB"), so our .bmap files read like its own; elsewhere imgbake prints
// sizes with progress.Bytes.
func humanSize(n int64) string {
	units := []string{"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"}
	if n < 1024 {
		return fmt.Sprintf("%d bytes", n)
	}
	f := float64(n)
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

type xmlRange struct {
	Chksum string `xml:"chksum,attr"`
	SHA1   string `xml:"sha1,attr"`
	Text   string `xml:",chardata"`
}

type xmlBmap struct {
	XMLName      xml.Name   `xml:"bmap"`
	Version      string     `xml:"version,attr"`
	ImageSize    string     `xml:"ImageSize"`
	BlockSize    string     `xml:"BlockSize"`
	BlocksCount  string     `xml:"BlocksCount"`
	MappedBlocks string     `xml:"MappedBlocksCount"`
	ChecksumType string     `xml:"ChecksumType"`
	FileChecksum string     `xml:"BmapFileChecksum"`
	FileSHA1     string     `xml:"BmapFileSHA1"`
	Ranges       []xmlRange `xml:"BlockMap>Range"`
}

// Parse reads a bmap file (format 1.x with sha1 or 2.x, as written by
// bmaptool create or by WriteTo), checks the file's own checksum when it has
// one, and validates the ranges against the image size.
func Parse(r io.Reader) (*Map, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading bmap: %w", err)
	}
	var x xmlBmap
	if err := xml.Unmarshal(data, &x); err != nil {
		return nil, fmt.Errorf("parsing bmap XML: %w", err)
	}
	major, err := strconv.Atoi(strings.SplitN(strings.TrimSpace(x.Version), ".", 2)[0])
	if err != nil {
		return nil, fmt.Errorf("parsing bmap: bad version %q", x.Version)
	}
	if major > 2 {
		return nil, fmt.Errorf("parsing bmap: format version %s is newer than this imgbake supports (2.x)", x.Version)
	}
	m := &Map{ChecksumType: strings.TrimSpace(x.ChecksumType)}
	fileSum := strings.TrimSpace(x.FileChecksum)
	if m.ChecksumType == "" { // format 1.3: sha1 everywhere, other names
		m.ChecksumType = "sha1"
		fileSum = strings.TrimSpace(x.FileSHA1)
	}
	if _, err := m.NewHash(); err != nil {
		return nil, fmt.Errorf("parsing bmap: %w", err)
	}
	if fileSum != "" {
		if err := checkFileSum(data, fileSum, m.ChecksumType); err != nil {
			return nil, err
		}
	}
	if err := m.parseSizes(&x); err != nil {
		return nil, fmt.Errorf("parsing bmap: %w", err)
	}
	if err := m.parseRanges(x.Ranges); err != nil {
		return nil, fmt.Errorf("parsing bmap: %w", err)
	}
	return m, nil
}

func checkFileSum(data []byte, want, typ string) error {
	i := bytes.Index(data, []byte(want))
	if i < 0 {
		return fmt.Errorf("parsing bmap: checksum %q not found in the file", want)
	}
	cp := bytes.Clone(data)
	copy(cp[i:i+len(want)], strings.Repeat("0", len(want)))
	h, _ := newHash(typ)
	h.Write(cp)
	if got := hex.EncodeToString(h.Sum(nil)); got != strings.ToLower(want) {
		return fmt.Errorf("bmap file is corrupt: its checksum is %s, the file says %s (re-create or re-download the .bmap)", got, want)
	}
	return nil
}

func (m *Map) parseSizes(x *xmlBmap) error {
	num := func(name, s string) (int64, error) {
		v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("bad <%s> %q", name, s)
		}
		return v, nil
	}
	var err error
	if m.ImageSize, err = num("ImageSize", x.ImageSize); err != nil {
		return err
	}
	bs, err := num("BlockSize", x.BlockSize)
	if err != nil {
		return err
	}
	if bs <= 0 || bs > 1<<30 {
		return fmt.Errorf("bad <BlockSize> %d", bs)
	}
	m.BlockSize = int(bs)
	blocks, err := num("BlocksCount", x.BlocksCount)
	if err != nil {
		return err
	}
	if blocks != m.BlocksCount() {
		return fmt.Errorf("inconsistent bmap: image size %d is not %d blocks of %d bytes", m.ImageSize, blocks, bs)
	}
	return nil
}

func (m *Map) parseRanges(xs []xmlRange) error {
	blocks := m.BlocksCount()
	for _, xr := range xs {
		text := strings.TrimSpace(xr.Text)
		first, last, ok := strings.Cut(text, "-")
		var r Range
		var err1, err2 error
		r.First, err1 = strconv.ParseInt(strings.TrimSpace(first), 10, 64)
		r.Last = r.First
		if ok {
			r.Last, err2 = strconv.ParseInt(strings.TrimSpace(last), 10, 64)
		}
		if err1 != nil || err2 != nil || r.First < 0 || r.First > r.Last {
			return fmt.Errorf("bad range %q", text)
		}
		if r.Last >= blocks {
			return fmt.Errorf("range %q is past the image's last block %d", text, blocks-1)
		}
		if n := len(m.Ranges); n > 0 && r.First <= m.Ranges[n-1].Last {
			return fmt.Errorf("range %q overlaps or precedes the one before it", text)
		}
		r.SHA256 = strings.ToLower(strings.TrimSpace(xr.Chksum))
		if r.SHA256 == "" {
			r.SHA256 = strings.ToLower(strings.TrimSpace(xr.SHA1))
		}
		m.Ranges = append(m.Ranges, r)
	}
	return nil
}
