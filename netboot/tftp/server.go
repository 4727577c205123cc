// Package tftp serves each Raspberry Pi's boot files over TFTP (RFC 1350,
// with the blksize and tsize options of RFC 2348 and RFC 2349), read-only,
// out of whatever a Resolver returns: typically a file inside the node's
// disk image, read straight from its FAT partition.
//
// The transfer engine is github.com/pin/tftp/v3; this package adds path
// cleaning, per-node resolution, Pi-specific logging and context handling.
package tftp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"

	pintftp "github.com/pin/tftp/v3"

	"github.com/imgbake/imgbake/netboot"
)

// ErrNotFound is returned by a Resolver for a file the node does not have.
var ErrNotFound = errors.New("file not found")

// File is one node file to send.
type File struct {
	// Data holds the file contents. If it also implements io.Closer, the
	// server closes it when the transfer ends.
	Data io.ReaderAt
	// Size is the file size in bytes.
	Size int64
}

// Resolver maps a cleaned request to the file to send. It returns an error
// wrapping ErrNotFound for unknown nodes or files; any other error is logged
// and reported to the client as an access violation.
type Resolver interface {
	Resolve(ctx context.Context, req Request) (File, error)
}

// ResolverFunc adapts a function to a Resolver.
type ResolverFunc func(ctx context.Context, req Request) (File, error)

// Resolve calls f.
func (f ResolverFunc) Resolve(ctx context.Context, req Request) (File, error) {
	return f(ctx, req)
}

// Defaults for the Server's optional fields. A Pi bootloader fetches one
// file at a time (after a first request for the size it aborts), so a few
// transfers per address are plenty; a transfer whose client stops
// acknowledging ends after Timeout * (Retries+1), about 6 s.
const (
	DefaultTimeout      = time.Second
	DefaultRetries      = 5
	DefaultMaxTransfers = 64
	DefaultMaxPerClient = 4
)

// maxBlocks is the last block number a bootloader without rollover can ack:
// Pi bootloaders before the 2025-09 EEPROM cannot fetch more blocks.
const maxBlocks = 65535

// Server serves read requests; write requests are refused.
type Server struct {
	// Resolver finds each request's file. Required.
	Resolver Resolver
	// OnRequest, if not nil, is called for every request the Resolver
	// accepted, before the transfer starts. It is how the caller learns
	// which address a serial (req.Prefix) boots from (req.Client).
	OnRequest func(req Request)
	// Log receives one line per refused request or failed transfer, debug
	// lines for the rest. Nil means silent.
	Log *slog.Logger
	// Timeout is how long to wait for an ACK before resending a block
	// (default DefaultTimeout).
	Timeout time.Duration
	// Retries is how many times a block is resent (default DefaultRetries).
	Retries int
	// MaxTransfers bounds the transfers in progress (default
	// DefaultMaxTransfers); MaxPerClient bounds them per client address
	// (default DefaultMaxPerClient). A request beyond either is refused
	// with "server busy" before it is resolved.
	MaxTransfers, MaxPerClient int

	transfers netboot.Slots
	busyLines netboot.LogLimit
}

// Serve answers TFTP requests arriving on conn until ctx is cancelled, then
// waits for running transfers to end and returns nil. Serve owns and closes
// conn: cancel ctx to stop it rather than closing conn.
// Each transfer runs on its own ephemeral UDP port (RFC 1350 TIDs). When
// conn is a *net.UDPConn, replies come from the address the request was sent
// to and blksize is clamped to the interface MTU.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	if s.Resolver == nil {
		return errors.New("tftp: Server.Resolver is nil")
	}
	srv := pintftp.NewServer(func(name string, rf io.ReaderFrom) error {
		return s.handleRead(ctx, name, rf)
	}, nil)
	srv.SetTimeout(cmp.Or(s.Timeout, DefaultTimeout))
	srv.SetRetries(cmp.Or(s.Retries, DefaultRetries))
	// Honour the client's blksize. pin/tftp's MTU clamping falls back to 512
	// whenever it cannot read the interface MTU (and always on a wrapped
	// conn), which halves throughput and, with no block-number rollover in
	// older bootloaders, halves the largest file a Pi can fetch. The Pi asks
	// 1024 (Pi 4) or 1468 (Pi 5), both within an Ethernet MTU.
	srv.SetBlockSizeNegotiation(false)
	// The retransmit timeout already waited; do not sleep on top of it.
	srv.SetBackoff(func(int) time.Duration { return 0 })
	srv.SetHook(hook{s.logger()})
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(conn) }()
	select {
	case <-ctx.Done():
		srv.Shutdown()
		<-errc
		conn.Close() // Shutdown skips it if Serve had not stored it yet
		return nil
	case err := <-errc:
		conn.Close()
		if err != nil {
			return fmt.Errorf("serving TFTP: %w", err)
		}
		return nil
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func (s *Server) handleRead(ctx context.Context, name string, rf io.ReaderFrom) error {
	log := s.logger()
	var client netip.AddrPort
	if ot, ok := rf.(pintftp.OutgoingTransfer); ok {
		ra := ot.RemoteAddr()
		client = ra.AddrPort()
		client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	}
	log = log.With("client", client.String(), "file", logName(name))
	if !s.transfers.Take(client.Addr(), cmp.Or(s.MaxTransfers, DefaultMaxTransfers), cmp.Or(s.MaxPerClient, DefaultMaxPerClient)) {
		if ok, dropped := s.busyLines.Allow(client.Addr().String()); ok {
			log.Warn("tftp: refusing request: too many transfers in progress, from this client or in all", "dropped_lines", dropped)
		}
		return errBusy
	}
	defer s.transfers.Give(client.Addr())
	req, err := ParsePath(name)
	req.Client = client
	if err != nil {
		log.Warn("tftp: refusing request", "err", err)
		return errors.New("access violation")
	}
	f, err := s.Resolver.Resolve(ctx, req)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			log.Warn("tftp: file not found", "err", err)
			return ErrNotFound
		}
		log.Warn("tftp: resolving request", "err", err)
		return errors.New("access violation")
	}
	if c, ok := f.Data.(io.Closer); ok {
		defer c.Close()
	}
	if s.OnRequest != nil {
		s.OnRequest(req)
	}
	if ot, ok := rf.(pintftp.OutgoingTransfer); ok {
		ot.SetSize(f.Size)
	}
	r := &blockReader{r: io.NewSectionReader(f.Data, 0, f.Size), size: f.Size, log: log}
	start := time.Now()
	n, err := rf.ReadFrom(r)
	switch {
	case err != nil && !r.started:
		// The Pi bootloader asks tsize=0, reads the OACK and aborts, then
		// asks again: that first round is expected.
		log.Debug("tftp: client ended the transfer after option negotiation", "err", err)
		return nil
	case err != nil:
		log.Warn("tftp: transfer failed", "sent", n, "size", f.Size, "err", err)
		return nil
	}
	log.Debug("tftp: sent", "bytes", n, "duration", time.Since(start))
	return nil
}

// errBusy refuses a request beyond the transfer limits.
var errBusy = errors.New("server busy")

// logName quotes a client-supplied name for a log line, bounded in length.
func logName(name string) string {
	const max = 80
	if len(name) > max {
		name = name[:max] + "..."
	}
	return name
}

// blockReader notes the first read: pin/tftp reads whole blocks, so the
// first buffer's length is the negotiated blksize.
type blockReader struct {
	r       *io.SectionReader
	size    int64
	log     *slog.Logger
	started bool
}

func (b *blockReader) Read(p []byte) (int, error) {
	if !b.started {
		b.started = true
		if blk := int64(len(p)); blk >= 512 && b.size/blk+1 > maxBlocks {
			b.log.Warn("tftp: file needs more than 65535 blocks at this blksize; "+
				"Pi bootloaders older than the 2025-09 EEPROM cannot roll the block number over and will fail: "+
				"make the file smaller or update the EEPROM",
				"blksize", blk, "blocks", b.size/blk+1, "size", b.size)
		}
	}
	return b.r.Read(p)
}

// hook logs transfer-level failures pin/tftp reports outside a handler,
// such as malformed packets.
type hook struct{ log *slog.Logger }

func (h hook) OnSuccess(pintftp.TransferStats) {}

func (h hook) OnFailure(st pintftp.TransferStats, err error) {
	if st.Filename == "" {
		h.log.Debug("tftp: ignoring packet", "err", err)
	}
}
