// Package manifest describes a built node image: what base it came from,
// what was written into it, and checksums of the image and of its data
// ranges so that `imgbake verify` can check an image file or a flashed
// device. It is written as JSON next to the image (k5.img.manifest.json)
// and never holds secrets: secret files are listed by path only.
package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/imgbake/imgbake/image/plan"
)

// FormatVersion is the manifest format written by this package.
const FormatVersion = 1

// Manifest is the record of one built image.
type Manifest struct {
	FormatVersion int `json:"format_version"`
	// Epoch is the SOURCE_DATE_EPOCH the image's timestamps come from.
	Epoch time.Time `json:"epoch"`
	Base  Base      `json:"base"`
	// Meta holds what the caller built with: k3s version and sha256, node,
	// profile. Never secrets.
	Meta    map[string]string `json:"meta,omitempty"`
	Files   []File            `json:"files"`
	Edits   []Edit            `json:"edits,omitempty"`
	Removes []string          `json:"removes,omitempty"`
	Image   Image             `json:"image"`
	// Ranges are the image's data ranges (the bmap's mapped blocks, in
	// aligned pieces of at most 1 MiB) with the sha256 of each; everything
	// else is unused space.
	Ranges []Range `json:"ranges"`
}

// Base identifies the base image.
type Base struct {
	SHA256 string  `json:"sha256"`
	Format string  `json:"format"`
	Size   int64   `json:"size"`
	OS     plan.OS `json:"os"`
}

// File is one entry of the plan as written.
type File struct {
	Part   string `json:"part"` // "root" or "boot"
	Path   string `json:"path"`
	Kind   string `json:"kind"` // "file", "dir", "symlink"
	Mode   string `json:"mode,omitempty"`
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"` // absent for secrets
	Target string `json:"target,omitempty"`
	Secret bool   `json:"secret,omitempty"`
}

// Edit is one in-place edit.
type Edit struct {
	Part string `json:"part"`
	Path string `json:"path"`
	Desc string `json:"desc"`
}

// Image describes the output.
type Image struct {
	// Name is the raw image's file name (k5.img).
	Name string `json:"name"`
	// Size is that of the raw (uncompressed) image. SHA256 is the sha256 of
	// the whole raw image, written only when asked for (build --sha256): the
	// range checksums below already prove every byte that is flashed.
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
	// Compressed names the compressed file written instead of the raw one
	// ("k5.img.xz"), with its checksum; empty when not compressed.
	Compressed       string `json:"compressed,omitempty"`
	CompressedSHA256 string `json:"compressed_sha256,omitempty"`
	// RawKept is set on a compressed build that found the raw image (Name)
	// of an earlier build with the same size and range checksums: that file
	// is this image too, and flash prefers it (no decompressing).
	RawKept bool `json:"raw_kept,omitempty"`
	// Bmap is the block map's file name.
	Bmap string `json:"bmap"`
	// BmapSHA256 is the sha256 of the .bmap file: with the ranges'
	// checksums it ties the set (image, .bmap, manifest) together, so that
	// CheckSet recognises files from different builds.
	BmapSHA256 string `json:"bmap_sha256,omitempty"`
	// Changed lists the offsets of (up to 64 of) the ranges this build
	// wrote, which differ between builds: CheckSet reads those.
	Changed []int64 `json:"changed,omitempty"`
}

// Range is a data range of the raw image with its checksum.
type Range struct {
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
	SHA256 string `json:"sha256"`
}

// Marshal renders m as indented JSON with a final newline. Map keys are
// sorted, so equal manifests give equal bytes.
func (m *Manifest) Marshal() ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("encoding manifest: %w", err)
	}
	return b.Bytes(), nil
}

// Load reads a manifest written by Marshal.
func Load(path string) (*Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("reading manifest %s: %w", filepath.Base(path), err)
	}
	if m.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("reading manifest %s: format version %d, this imgbake reads %d: use the imgbake that built the image",
			filepath.Base(path), m.FormatVersion, FormatVersion)
	}
	return &m, nil
}
