package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
)

// errClientAborted ends a handshake the client closed on purpose.
var errClientAborted = errors.New("client aborted the handshake")

// session is one client connection.
type session struct {
	srv      *Server
	conn     net.Conn
	br       *bufio.Reader
	client   netip.AddrPort
	log      *slog.Logger
	noZeroes bool
}

// handshake runs the fixed newstyle negotiation and returns the export the
// client chose, already claimed for this connection.
func (s *session) handshake(ctx context.Context) (Export, error) {
	s.br = bufio.NewReaderSize(s.conn, 4096)
	hello := make([]byte, 18)
	binary.BigEndian.PutUint64(hello[0:], magicNBD)
	binary.BigEndian.PutUint64(hello[8:], magicIHaveOpt)
	binary.BigEndian.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := s.conn.Write(hello); err != nil {
		return Export{}, fmt.Errorf("sending greeting: %w", err)
	}
	var cflags uint32
	if err := binary.Read(s.br, binary.BigEndian, &cflags); err != nil {
		return Export{}, fmt.Errorf("reading client flags: %w", err)
	}
	if cflags&^(flagFixedNewstyle|flagNoZeroes) != 0 || cflags&flagFixedNewstyle == 0 {
		return Export{}, fmt.Errorf("client flags %#x: only fixed newstyle clients are supported", cflags)
	}
	s.noZeroes = cflags&flagNoZeroes != 0
	for {
		var hdr [16]byte
		if _, err := io.ReadFull(s.br, hdr[:]); err != nil {
			return Export{}, fmt.Errorf("reading option: %w", err)
		}
		if m := binary.BigEndian.Uint64(hdr[0:]); m != magicIHaveOpt {
			return Export{}, fmt.Errorf("bad option magic %#x", m)
		}
		opt, n := binary.BigEndian.Uint32(hdr[8:]), binary.BigEndian.Uint32(hdr[12:])
		if n > maxOptionLen {
			return Export{}, fmt.Errorf("option %d with %d bytes of data, more than %d", opt, n, maxOptionLen)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(s.br, data); err != nil {
			return Export{}, fmt.Errorf("reading option %d data: %w", opt, err)
		}
		exp, done, err := s.option(ctx, opt, data)
		if done || err != nil {
			return exp, err
		}
	}
}

// option answers one option; done reports that transmission starts.
func (s *session) option(ctx context.Context, opt uint32, data []byte) (Export, bool, error) {
	switch opt {
	case optExportName:
		exp, err := s.open(ctx, string(data))
		if err != nil {
			// NBD_OPT_EXPORT_NAME has no error reply: the spec says close.
			return Export{}, false, err
		}
		b := make([]byte, 10, 10+124)
		binary.BigEndian.PutUint64(b, uint64(exp.Size))
		binary.BigEndian.PutUint16(b[8:], transmitFlags(exp))
		if !s.noZeroes {
			b = b[:10+124]
		}
		if _, err := s.conn.Write(b); err != nil {
			s.srv.release(exp.Name)
			return Export{}, false, fmt.Errorf("sending export info: %w", err)
		}
		return exp, true, nil
	case optAbort:
		s.conn.Write(optReply(opt, repAck, nil))
		return Export{}, false, errClientAborted
	case optList:
		return Export{}, false, s.list(ctx, data)
	case optInfo, optGo:
		return s.infoGo(ctx, opt, data)
	default:
		return Export{}, false, s.reply(opt, repErrUnsup, []byte("option not supported"))
	}
}

func (s *session) reply(opt, typ uint32, data []byte) error {
	if _, err := s.conn.Write(optReply(opt, typ, data)); err != nil {
		return fmt.Errorf("sending option reply: %w", err)
	}
	return nil
}

func (s *session) list(ctx context.Context, data []byte) error {
	if len(data) != 0 {
		return s.reply(optList, repErrInvalid, []byte("NBD_OPT_LIST takes no data"))
	}
	var names []string
	if l, ok := s.srv.Backend.(Lister); ok {
		var err error
		if names, err = l.List(ctx, s.client.Addr()); err != nil {
			s.log.Warn("nbd: listing exports", "err", err)
			return s.reply(optList, repErrShutdown, []byte("cannot list exports now"))
		}
	}
	for _, n := range names {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(n)))
		if err := s.reply(optList, repServer, append(b, n...)); err != nil {
			return err
		}
	}
	return s.reply(optList, repAck, nil)
}

// infoGo answers NBD_OPT_INFO and NBD_OPT_GO.
func (s *session) infoGo(ctx context.Context, opt uint32, data []byte) (Export, bool, error) {
	if len(data) < 6 {
		return Export{}, false, s.reply(opt, repErrInvalid, []byte("short request"))
	}
	n := binary.BigEndian.Uint32(data)
	if uint64(n)+6 > uint64(len(data)) {
		return Export{}, false, s.reply(opt, repErrInvalid, []byte("bad name length"))
	}
	name := string(data[4 : 4+n])
	rest := data[4+n:]
	nreq := int(binary.BigEndian.Uint16(rest))
	if len(rest) != 2+2*nreq {
		return Export{}, false, s.reply(opt, repErrInvalid, []byte("bad information request count"))
	}
	wantBlock := false
	for i := 0; i < nreq; i++ {
		if binary.BigEndian.Uint16(rest[2+2*i:]) == infoBlockSize {
			wantBlock = true
		}
	}
	exp, err := s.lookup(ctx, name)
	if err != nil {
		// The same answer for every refusal: it tells a client nothing
		// about other nodes, not even whether the name is one.
		s.log.Warn("nbd: refusing export", "export", logName(name), "err", err)
		return Export{}, false, s.reply(opt, repErrUnknown, []byte(refusal))
	}
	if opt == optGo {
		if err := s.srv.claim(exp, s.client); err != nil {
			code, msg := uint32(repErrUnknown), "nbd: refusing client"
			if errors.Is(err, errInUse) {
				code, msg = repErrPolicy, "nbd: refusing second client" // the client may use it: it is just busy
			}
			s.log.Warn(msg, "export", exp.Name, "err", err)
			return Export{}, false, s.reply(opt, code, []byte(refusal))
		}
	}
	info := binary.BigEndian.AppendUint16(nil, infoExport)
	info = binary.BigEndian.AppendUint64(info, uint64(exp.Size))
	info = binary.BigEndian.AppendUint16(info, transmitFlags(exp))
	err = s.reply(opt, repInfo, info)
	if err == nil && wantBlock {
		b := binary.BigEndian.AppendUint16(nil, infoBlockSize)
		b = binary.BigEndian.AppendUint32(b, 1)
		b = binary.BigEndian.AppendUint32(b, preferredBlock)
		b = binary.BigEndian.AppendUint32(b, maxPayload)
		err = s.reply(opt, repInfo, b)
	}
	if err == nil {
		err = s.reply(opt, repAck, nil)
	}
	if opt == optGo && err != nil {
		s.srv.release(exp.Name)
	}
	return exp, opt == optGo && err == nil, err
}

// lookup finds name and checks that this client may use it.
func (s *session) lookup(ctx context.Context, name string) (Export, error) {
	if len(name) > maxNameLen {
		return Export{}, fmt.Errorf("export name longer than %d bytes: %w", maxNameLen, ErrUnknownExport)
	}
	exp, err := s.srv.Backend.Export(ctx, name, s.client.Addr())
	if err != nil {
		return Export{}, err
	}
	if exp.Name == "" {
		exp.Name = name
	}
	if !exp.Client.IsValid() || exp.Client.Unmap() != s.client.Addr() {
		return Export{}, fmt.Errorf("export %q is served only to its node's address %v, not %v", name, exp.Client, s.client.Addr())
	}
	if exp.Size < 0 || exp.Disk == nil {
		return Export{}, fmt.Errorf("export %q has no disk", name)
	}
	return exp, nil
}

// open is lookup plus claim, for NBD_OPT_EXPORT_NAME.
func (s *session) open(ctx context.Context, name string) (Export, error) {
	exp, err := s.lookup(ctx, name)
	if err != nil {
		return Export{}, fmt.Errorf("refusing export %q: %w", name, err)
	}
	if err := s.srv.claim(exp, s.client); err != nil {
		return Export{}, fmt.Errorf("refusing export %q: %w", name, err)
	}
	return exp, nil
}

// refusal is the text of every refused export option.
const refusal = "no such export for this client"

// logName quotes a client-supplied export name for a log line, bounded.
func logName(name string) string {
	const max = 80
	if len(name) > max {
		name = name[:max] + "..."
	}
	return name
}

func transmitFlags(e Export) uint16 {
	f := uint16(tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagWriteZeroes)
	if e.ReadOnly {
		f |= tflagReadOnly
	}
	return f
}
