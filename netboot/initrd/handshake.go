package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// NBD protocol constants (NBD protocol specification, "Fixed newstyle
// negotiation").
const (
	nbdMagic        = 0x4e42444d41474943 // "NBDMAGIC"
	nbdOptMagic     = 0x49484156454f5054 // "IHAVEOPT"
	nbdRepMagic     = 0x0003e889045565a9
	flagFixed       = 1 << 0
	flagNoZeroes    = 1 << 1
	optExportName   = 1
	optGo           = 7
	repAck          = 1
	repInfo         = 3
	repErrUnsup     = 1<<31 | 1
	infoExport      = 0
	maxOptReplySize = 1 << 20
)

// export is what the handshake learned about the export.
type export struct {
	size  uint64
	flags uint16 // transmission flags, passed to the kernel
}

// dial connects to the NBD server and negotiates export name, leaving the
// connection ready for transmission.
func dial(ctx context.Context, server, name string) (*net.TCPConn, export, error) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1}
	c, err := d.DialContext(ctx, "tcp", server)
	if err != nil {
		return nil, export{}, fmt.Errorf("connecting to the NBD server %s: %w", server, err)
	}
	tc := c.(*net.TCPConn)
	tc.SetNoDelay(true)
	tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3})
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	exp, err := handshake(tc, name)
	if err != nil {
		tc.Close()
		return nil, export{}, fmt.Errorf("negotiating export %s with %s: %w", name, server, err)
	}
	tc.SetDeadline(time.Time{})
	return tc, exp, nil
}

// handshake runs the fixed newstyle negotiation on rw: NBD_OPT_GO, or
// NBD_OPT_EXPORT_NAME for a server without it.
func handshake(rw io.ReadWriter, name string) (export, error) {
	var hdr struct {
		Magic, OptMagic uint64
		Flags           uint16
	}
	if err := binary.Read(rw, binary.BigEndian, &hdr); err != nil {
		return export{}, fmt.Errorf("reading greeting: %w", err)
	}
	if hdr.Magic != nbdMagic || hdr.OptMagic != nbdOptMagic || hdr.Flags&flagFixed == 0 {
		return export{}, errors.New("not a fixed newstyle NBD server")
	}
	cflags := uint32(flagFixed)
	noZeroes := hdr.Flags&flagNoZeroes != 0
	if noZeroes {
		cflags |= flagNoZeroes
	}
	if err := binary.Write(rw, binary.BigEndian, cflags); err != nil {
		return export{}, fmt.Errorf("sending client flags: %w", err)
	}
	// NBD_OPT_GO: name length, name, no information requests.
	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	data = binary.BigEndian.AppendUint16(data, 0)
	if err := sendOpt(rw, optGo, data); err != nil {
		return export{}, err
	}
	var exp export
	var haveInfo bool
	for {
		typ, reply, err := readOptReply(rw, optGo)
		if err != nil {
			return export{}, err
		}
		switch {
		case typ == repInfo && len(reply) >= 12 && binary.BigEndian.Uint16(reply) == infoExport:
			exp = export{size: binary.BigEndian.Uint64(reply[2:]), flags: binary.BigEndian.Uint16(reply[10:])}
			haveInfo = true
		case typ == repInfo:
			// Other information (name, block sizes): not needed.
		case typ == repAck:
			if !haveInfo {
				return export{}, errors.New("server acknowledged NBD_OPT_GO without export information")
			}
			return exp, nil
		case typ == repErrUnsup:
			return exportName(rw, name, noZeroes)
		case typ&(1<<31) != 0:
			return export{}, fmt.Errorf("server refused export %q: error %#x %s", name, typ, bytes.ToValidUTF8(reply, nil))
		}
	}
}

// exportName is the old NBD_OPT_EXPORT_NAME negotiation.
func exportName(rw io.ReadWriter, name string, noZeroes bool) (export, error) {
	if err := sendOpt(rw, optExportName, []byte(name)); err != nil {
		return export{}, err
	}
	b := make([]byte, 10)
	if !noZeroes {
		b = make([]byte, 10+124)
	}
	if _, err := io.ReadFull(rw, b); err != nil {
		return export{}, fmt.Errorf("reading export information (unknown export?): %w", err)
	}
	return export{size: binary.BigEndian.Uint64(b), flags: binary.BigEndian.Uint16(b[8:])}, nil
}

func sendOpt(w io.Writer, opt uint32, data []byte) error {
	b := binary.BigEndian.AppendUint64(nil, nbdOptMagic)
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
	if h.Magic != nbdRepMagic || h.Opt != opt || h.Length > maxOptReplySize {
		return 0, nil, errors.New("malformed option reply")
	}
	data := make([]byte, h.Length)
	if _, err := io.ReadFull(r, data); err != nil {
		return 0, nil, fmt.Errorf("reading option reply: %w", err)
	}
	return h.Typ, data, nil
}
