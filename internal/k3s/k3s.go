// Package k3s gets the k3s binary an image needs: downloaded from a release
// (or a mirror), verified against the release's sha256sum file and cached,
// or a local file checked for the right ELF machine.
package k3s

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Asset returns the release asset and checksum file names for an image
// architecture ("arm64" or "armhf"). The armhf checksum file is named "arm".
func Asset(arch string) (binary, sums string, err error) {
	switch arch {
	case "arm64":
		return "k3s-arm64", "sha256sum-arm64.txt", nil
	case "armhf":
		return "k3s-armhf", "sha256sum-arm.txt", nil
	case "amd64":
		return "k3s", "sha256sum-amd64.txt", nil
	}
	return "", "", fmt.Errorf("no k3s build for architecture %q (k3s has arm64, armhf and amd64)", arch)
}

// Binary is a k3s binary ready to go into an image.
type Binary struct {
	Path   string
	SHA256 string
	Arch   string
	// Version is the release tag, or "" for a local binary.
	Version string
}

// CheckELF reports an error unless path is an ELF executable for arch:
// EM_AARCH64 (64-bit) for arm64, EM_ARM (32-bit) for armhf.
func CheckELF(path, arch string) error {
	f, err := elf.Open(path)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("reading %s: %w", path, err)
	} else if err != nil { // a bad header or a file too short for one
		return fmt.Errorf("%s is not an ELF executable; give the k3s-%s binary from a k3s release", path, arch)
	}
	defer f.Close()
	want, class := elf.EM_NONE, elf.ELFCLASSNONE
	switch arch {
	case "arm64":
		want, class = elf.EM_AARCH64, elf.ELFCLASS64
	case "armhf":
		want, class = elf.EM_ARM, elf.ELFCLASS32
	case "amd64":
		want, class = elf.EM_X86_64, elf.ELFCLASS64
	default:
		return fmt.Errorf("no k3s build for architecture %q", arch)
	}
	if f.Machine != want || f.Class != class {
		return fmt.Errorf("%s is built for %s (%s), but the image is %s: use the k3s-%s binary of the release", path, machineName(f.Machine), f.Class, arch, arch)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("%s is an ELF %s, not an executable", path, f.Type)
	}
	return nil
}

func machineName(m elf.Machine) string {
	switch m {
	case elf.EM_AARCH64:
		return "arm64"
	case elf.EM_ARM:
		return "32-bit ARM"
	case elf.EM_X86_64:
		return "amd64"
	case elf.EM_386:
		return "386"
	}
	return m.String()
}

// Local checks a k3s binary given on the command line (--k3s-binary) for arch
// and returns it with its checksum.
func Local(path, arch string) (*Binary, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("reading --k3s-binary: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("--k3s-binary %s is not a regular file", path)
	}
	if err := CheckELF(path, arch); err != nil {
		return nil, err
	}
	sum, err := fileSHA256(path)
	if err != nil {
		return nil, err
	}
	return &Binary{Path: path, SHA256: sum, Arch: arch}, nil
}

// CheckAirgap checks an airgap images tarball (--airgap-images): a regular
// file whose name k3s recognises in agent/images.
func CheckAirgap(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("reading --airgap-images: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("--airgap-images %s is not a regular file", path)
	}
	base := filepath.Base(path)
	for _, s := range []string{".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.lz4", ".tar.bz2"} {
		if strings.HasSuffix(base, s) {
			return nil
		}
	}
	return fmt.Errorf("--airgap-images %s: k3s loads only .tar, .tar.gz, .tar.zst, .tar.lz4 or .tar.bz2 files (such as k3s-airgap-images-arm64.tar.zst from the release)", path)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// parseSums finds name in a sha256sum file ("<hex>  <name>" or "<hex> *<name>").
func parseSums(data []byte, name string) (string, bool) {
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.TrimPrefix(f[1], "*") == name && len(f[0]) == 64 {
			if _, err := hex.DecodeString(f[0]); err == nil {
				return strings.ToLower(f[0]), true
			}
		}
	}
	return "", false
}
