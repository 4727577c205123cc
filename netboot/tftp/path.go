package tftp

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/imgbake/imgbake/netboot"
)

// PrefixKind says how a request's first path element names the node.
type PrefixKind int

const (
	// NoPrefix: the path starts at the TFTP root (the Pi 3B ROM asks for
	// "bootcode.bin" this way), or with a directory that is neither a serial
	// nor a MAC (EEPROM TFTP_PREFIX=1, a fixed string).
	NoPrefix PrefixKind = iota
	// SerialPrefix: "1234abcd/start4.elf", the Pi 4/5 default.
	SerialPrefix
	// MACPrefix: "dc-a6-32-01-36-c2/start4.elf" (EEPROM TFTP_PREFIX=2).
	MACPrefix
)

// maxPathLen bounds a request path; Pi paths are far shorter.
const maxPathLen = 255

// ErrBadPath is wrapped by errors for paths the server refuses to resolve.
var ErrBadPath = errors.New("bad path")

// Request is a parsed and cleaned read request.
type Request struct {
	// Raw is the file name exactly as the client sent it.
	Raw string
	// Kind says what Prefix holds.
	Kind PrefixKind
	// Prefix is the normalised node prefix: a netboot.Serial ("1234abcd")
	// or a MAC prefix ("dc-a6-32-01-36-c2"), empty for NoPrefix.
	Prefix string
	// File is the path below the prefix, '/'-separated, with no empty, "."
	// or ".." elements, e.g. "overlays/disable-bt.dtbo".
	File string
	// Client is the address the request came from.
	Client netip.AddrPort
}

// ParsePath cleans a TFTP file name and splits off the node prefix. It
// refuses (with an error wrapping ErrBadPath) rather than repairs anything
// that could name a file outside the node's own files: absolute paths, ".."
// or "." elements, empty elements, backslashes, NUL and other control bytes,
// and invalid UTF-8.
func ParsePath(raw string) (Request, error) {
	req := Request{Raw: raw}
	if err := checkPath(raw); err != nil {
		return req, err
	}
	elems := strings.Split(raw, "/")
	for _, e := range elems {
		if e == "" || e == "." || e == ".." {
			return req, fmt.Errorf("%w: empty, \".\" or \"..\" element", ErrBadPath)
		}
	}
	if len(elems) > 1 {
		if s, err := netboot.ParseSerial(elems[0]); err == nil && len(elems[0]) == 8 {
			req.Kind, req.Prefix = SerialPrefix, string(s)
		} else if mac, err := netboot.ParseMACPrefix(elems[0]); err == nil {
			req.Kind, req.Prefix = MACPrefix, netboot.MACPrefix(mac)
		}
	}
	if req.Kind != NoPrefix {
		elems = elems[1:]
	}
	req.File = strings.Join(elems, "/")
	return req, nil
}

func checkPath(raw string) error {
	switch {
	case raw == "":
		return fmt.Errorf("%w: empty file name", ErrBadPath)
	case len(raw) > maxPathLen:
		return fmt.Errorf("%w: file name longer than %d bytes", ErrBadPath, maxPathLen)
	case !utf8.ValidString(raw):
		return fmt.Errorf("%w: not UTF-8", ErrBadPath)
	case raw[0] == '/':
		return fmt.Errorf("%w: absolute path", ErrBadPath)
	}
	for _, r := range raw {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return fmt.Errorf("%w: backslash or control character", ErrBadPath)
		}
	}
	return nil
}
