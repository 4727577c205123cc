package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ClientExport is what a client's handshake learned about the export.
type ClientExport struct {
	// Size is the export size in bytes.
	Size uint64
	// Flags are the transmission flags, as the kernel's NBD client takes
	// them.
	Flags uint16
}

// maxOptReply bounds the option reply a client reads.
const maxOptReply = 1 << 20

// Handshake is the client side of the fixed newstyle negotiation on rw:
// NBD_OPT_GO for export name, or NBD_OPT_EXPORT_NAME with a server that
// lacks it. It leaves rw ready for transmission. It is what the netboot
// /init runs before it hands the socket to the kernel.
func Handshake(rw io.ReadWriter, name string) (ClientExport, error) {
	var hdr struct {
		Magic, OptMagic uint64
		Flags           uint16
	}
	if err := binary.Read(rw, binary.BigEndian, &hdr); err != nil {
		return ClientExport{}, fmt.Errorf("reading greeting: %w", err)
	}
	if hdr.Magic != magicNBD || hdr.OptMagic != magicIHaveOpt || hdr.Flags&flagFixedNewstyle == 0 {
		return ClientExport{}, errors.New("not a fixed newstyle NBD server")
	}
	cflags := uint32(flagFixedNewstyle)
	noZeroes := hdr.Flags&flagNoZeroes != 0
	if noZeroes {
		cflags |= flagNoZeroes
	}
	if err := binary.Write(rw, binary.BigEndian, cflags); err != nil {
		return ClientExport{}, fmt.Errorf("sending client flags: %w", err)
	}
	// NBD_OPT_GO: name length, name, no information requests.
	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	data = binary.BigEndian.AppendUint16(data, 0)
	if err := sendOpt(rw, optGo, data); err != nil {
		return ClientExport{}, err
	}
	var exp ClientExport
	var haveInfo bool
	for {
		typ, reply, err := readOptReply(rw, optGo)
		if err != nil {
			return ClientExport{}, err
		}
		switch {
		case typ == repInfo && len(reply) >= 12 && binary.BigEndian.Uint16(reply) == infoExport:
			exp = ClientExport{Size: binary.BigEndian.Uint64(reply[2:]), Flags: binary.BigEndian.Uint16(reply[10:])}
			haveInfo = true
		case typ == repInfo:
			// Other information (name, block sizes): not needed.
		case typ == repAck:
			if !haveInfo {
				return ClientExport{}, errors.New("server acknowledged NBD_OPT_GO without export information")
			}
			return exp, nil
		case typ == repErrUnsup:
			return exportName(rw, name, noZeroes)
		case typ&(1<<31) != 0:
			return ClientExport{}, fmt.Errorf("server refused export %q: error %#x %s", name, typ, bytes.ToValidUTF8(reply, nil))
		}
	}
}

// exportName is the old NBD_OPT_EXPORT_NAME negotiation.
func exportName(rw io.ReadWriter, name string, noZeroes bool) (ClientExport, error) {
	if err := sendOpt(rw, optExportName, []byte(name)); err != nil {
		return ClientExport{}, err
	}
	b := make([]byte, 10)
	if !noZeroes {
		b = make([]byte, 10+124)
	}
	if _, err := io.ReadFull(rw, b); err != nil {
		return ClientExport{}, fmt.Errorf("reading export information (unknown export?): %w", err)
	}
	return ClientExport{Size: binary.BigEndian.Uint64(b), Flags: binary.BigEndian.Uint16(b[8:])}, nil
}

func sendOpt(w io.Writer, opt uint32, data []byte) error {
	b := binary.BigEndian.AppendUint64(nil, magicIHaveOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	if _, err := w.Write(append(b, data...)); err != nil {
		return fmt.Errorf("sending option %d: %w", opt, err)
	}
	return nil
}

func readOptReply(r io.Reader, opt uint32) (uint32, []byte, error) {
	var h struct {
		Magic    uint64
		Opt, Typ uint32
		Length   uint32
	}
	if err := binary.Read(r, binary.BigEndian, &h); err != nil {
		return 0, nil, fmt.Errorf("reading option reply: %w", err)
	}
	if h.Magic != magicOptReply || h.Opt != opt || h.Length > maxOptReply {
		return 0, nil, errors.New("malformed option reply")
	}
	data := make([]byte, h.Length)
	if _, err := io.ReadFull(r, data); err != nil {
		return 0, nil, fmt.Errorf("reading option reply: %w", err)
	}
	return h.Typ, data, nil
}
