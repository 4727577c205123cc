package nbd

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Wire constants from the NBD protocol specification
// (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md).
const (
	magicNBD        = 0x4e42444d41474943 // "NBDMAGIC"
	magicIHaveOpt   = 0x49484156454f5054 // "IHAVEOPT"
	magicOptReply   = 0x0003e889045565a9
	magicRequest    = 0x25609513
	magicSimpleResp = 0x67446698

	flagFixedNewstyle = 1 << 0 // handshake flags
	flagNoZeroes      = 1 << 1

	optExportName = 1
	optAbort      = 2
	optList       = 3
	optInfo       = 6
	optGo         = 7

	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repErrUnsup    = 1<<31 + 1
	repErrPolicy   = 1<<31 + 2
	repErrInvalid  = 1<<31 + 3
	repErrUnknown  = 1<<31 + 6
	repErrShutdown = 1<<31 + 7

	infoExport    = 0
	infoBlockSize = 3

	// Transmission flags.
	tflagHasFlags     = 1 << 0
	tflagReadOnly     = 1 << 1
	tflagSendFlush    = 1 << 2
	tflagSendFUA      = 1 << 3
	tflagSendTrim     = 1 << 5
	tflagWriteZeroes  = 1 << 6
	cmdFlagFUA        = 1 << 0
	cmdFlagNoHole     = 1 << 1
	cmdRead           = 0
	cmdWrite          = 1
	cmdDisc           = 2
	cmdFlush          = 3
	cmdTrim           = 4
	cmdWriteZeroes    = 6
	errPerm           = 1
	errIO             = 5
	errInval          = 22
	errNoSpc          = 28
	errNotSup         = 95
	errShutdown       = 108
	maxOptionLen      = 64 << 10 // longer option data ends the connection
	maxNameLen        = 4096     // the spec's limit for export names
	maxPayload        = 32 << 20 // largest READ/WRITE; advertised as the maximum block size
	preferredBlock    = 4096
	requestHeaderSize = 28
)

// request is one transmission-phase request header.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	offset uint64
	length uint32
}

func readRequest(r io.Reader, buf *[requestHeaderSize]byte) (request, error) {
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return request{}, err
	}
	if m := binary.BigEndian.Uint32(buf[0:]); m != magicRequest {
		return request{}, fmt.Errorf("bad request magic %#x", m)
	}
	return request{
		flags:  binary.BigEndian.Uint16(buf[4:]),
		typ:    binary.BigEndian.Uint16(buf[6:]),
		cookie: binary.BigEndian.Uint64(buf[8:]),
		offset: binary.BigEndian.Uint64(buf[16:]),
		length: binary.BigEndian.Uint32(buf[24:]),
	}, nil
}

func simpleReply(errno uint32, cookie uint64) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint32(b[0:], magicSimpleResp)
	binary.BigEndian.PutUint32(b[4:], errno)
	binary.BigEndian.PutUint64(b[8:], cookie)
	return b
}

// optReply encodes an option reply header followed by data.
func optReply(opt, typ uint32, data []byte) []byte {
	b := make([]byte, 20, 20+len(data))
	binary.BigEndian.PutUint64(b[0:], magicOptReply)
	binary.BigEndian.PutUint32(b[8:], opt)
	binary.BigEndian.PutUint32(b[12:], typ)
	binary.BigEndian.PutUint32(b[16:], uint32(len(data)))
	return append(b, data...)
}

func cmdName(typ uint16) string {
	switch typ {
	case cmdRead:
		return "READ"
	case cmdWrite:
		return "WRITE"
	case cmdDisc:
		return "DISC"
	case cmdFlush:
		return "FLUSH"
	case cmdTrim:
		return "TRIM"
	case cmdWriteZeroes:
		return "WRITE_ZEROES"
	}
	return fmt.Sprintf("command %d", typ)
}
