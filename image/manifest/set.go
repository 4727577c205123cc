package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// maxProbes bounds how many ranges CheckSet reads without Image.Changed.
const maxProbes = 16

// CheckSet checks, before anything is written, that the image file and the
// .bmap beside a manifest are the ones it describes, and not files of
// another build (a build killed while it switched the files): the .bmap's
// sha256, the image's size, and for a raw image the checksums of the
// ranges the build changed (Image.Changed), or for a compressed image its
// sha256. bmapPath may
// be "" (no .bmap used). A manifest from before these fields exists is not
// checked.
func (m *Manifest) CheckSet(imagePath, bmapPath string) error {
	stale := func(what string) error {
		return fmt.Errorf("%s is not the file %s describes: the files come from different builds (was a build interrupted?); build the node again",
			what, m.Image.Name+".manifest.json")
	}
	if bmapPath != "" && m.Image.BmapSHA256 != "" && filepath.Base(bmapPath) == m.Image.Bmap {
		sum, err := FileSHA256(bmapPath)
		if err != nil {
			return fmt.Errorf("checking %s: %w", bmapPath, err)
		}
		if sum != m.Image.BmapSHA256 {
			return stale(bmapPath)
		}
	}
	base := filepath.Base(imagePath)
	switch {
	case m.Image.Compressed != "" && base == m.Image.Compressed && m.Image.CompressedSHA256 != "":
		sum, err := FileSHA256(imagePath)
		if err != nil {
			return fmt.Errorf("checking %s: %w", imagePath, err)
		}
		if sum != m.Image.CompressedSHA256 {
			return stale(imagePath)
		}
	case base == m.Image.Name && m.Image.BmapSHA256 != "":
		f, err := os.Open(imagePath)
		if err != nil {
			return fmt.Errorf("checking %s: %w", imagePath, err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("checking %s: %w", imagePath, err)
		}
		if st.Size() != m.Image.Size {
			return stale(imagePath)
		}
		for _, r := range m.probes() {
			h := sha256.New()
			if _, err := io.Copy(h, io.NewSectionReader(f, r.Offset, r.Length)); err != nil {
				return fmt.Errorf("checking %s: %w", imagePath, err)
			}
			if !strings.EqualFold(hex.EncodeToString(h.Sum(nil)), r.SHA256) {
				return stale(imagePath)
			}
		}
	}
	return nil
}

// probes returns the ranges the build changed, or without that record up
// to maxProbes ranges spread over the image.
func (m *Manifest) probes() []Range {
	if len(m.Image.Changed) > 0 {
		changed := map[int64]bool{}
		for _, off := range m.Image.Changed {
			changed[off] = true
		}
		var out []Range
		for _, r := range m.Ranges {
			if changed[r.Offset] {
				out = append(out, r)
			}
		}
		return out
	}
	if len(m.Ranges) <= maxProbes {
		return m.Ranges
	}
	var out []Range
	for i := range maxProbes {
		out = append(out, m.Ranges[i*len(m.Ranges)/maxProbes])
	}
	return out
}

// FileSHA256 returns the hex sha256 of the file at p.
func FileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
