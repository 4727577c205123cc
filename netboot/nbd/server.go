// Package nbd is a Network Block Device server (fixed newstyle handshake,
// simple replies) that serves each Raspberry Pi its root disk out of its own
// disk image.
//
// Each export is served to one address only (its node's) and to one client
// at a time: a second concurrent client is refused, so two kernels can never
// write the same image. When the server stops, it finishes in-flight
// requests, syncs the disks and closes the connections; a node's NBD client
// reconnects to the next server and I/O resumes.
package nbd

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imgbake/imgbake/netboot"
)

// Disk is an export's backing store, typically an *os.File or a section of
// a disk image. Sync must make completed writes durable. If the Disk also
// implements Trimmer, TRIM and WRITE_ZEROES use it; an *os.File gets holes
// punched on Linux; anything else has zeros written.
type Disk interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// Trimmer discards a byte range so that it reads back as zeros.
type Trimmer interface {
	Trim(off, length int64) error
}

// Export is one served disk.
type Export struct {
	// Name is the export name clients ask for.
	Name string
	// Disk holds the data; the server never closes it.
	Disk Disk
	// Size is the export size in bytes.
	Size int64
	// Client is the only address allowed to use the export. The zero Addr
	// allows nobody.
	Client netip.Addr
	// ReadOnly refuses writes with EPERM.
	ReadOnly bool
	// Claim, if not nil, is called when a client starts using the export
	// (NBD_OPT_GO or NBD_OPT_EXPORT_NAME); an error refuses the client.
	// The release it returns is called when that client's connection ends.
	Claim func() (release func(), err error)
	// Activity, if not nil, is set to the Unix time (seconds) of each
	// request the client sends, for a "last I/O" in a status display.
	Activity *atomic.Int64
}

// ErrUnknownExport is wrapped by Backend errors for names it does not know.
var ErrUnknownExport = errors.New("unknown export")

// Backend finds exports by name, for a client at address client. Whatever
// error it returns, the client is told only that there is no such export:
// a refusal names no node and no address.
type Backend interface {
	Export(ctx context.Context, name string, client netip.Addr) (Export, error)
}

// BackendFunc adapts a function to a Backend.
type BackendFunc func(ctx context.Context, name string, client netip.Addr) (Export, error)

// Export calls f.
func (f BackendFunc) Export(ctx context.Context, name string, client netip.Addr) (Export, error) {
	return f(ctx, name, client)
}

// Lister is implemented by Backends that can answer NBD_OPT_LIST: the names
// of the exports client may use. Without it the list is empty.
type Lister interface {
	List(ctx context.Context, client netip.Addr) ([]string, error)
}

// Defaults for the Server's handshake limits. The netboot /init and
// qemu-nbd finish a handshake in a few round trips; a client that has not
// picked an export by then is dropped. Connections beyond the limits are
// closed as soon as they are accepted.
const (
	DefaultHandshakeTimeout       = 10 * time.Second
	DefaultMaxHandshakes          = 64
	DefaultMaxHandshakesPerClient = 4
)

// Server serves NBD exports. The zero value is not usable: set Backend.
type Server struct {
	// Backend finds exports. Required.
	Backend Backend
	// Log receives a line for every refused client, dropped connection and
	// I/O error, debug lines for connects and disconnects. Nil means silent.
	Log *slog.Logger
	// HandshakeTimeout bounds the time a client may take to pick an export
	// (DefaultHandshakeTimeout if 0).
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the connections still in their handshake
	// (DefaultMaxHandshakes if 0); MaxHandshakesPerClient bounds them per
	// client address (DefaultMaxHandshakesPerClient if 0).
	MaxHandshakes, MaxHandshakesPerClient int

	mu     sync.Mutex
	active map[string]claimed // by export name
	shakes netboot.Slots      // handshakes in progress
	bufs   bufPool
	lines  netboot.LogLimit
}

// Serve accepts connections on l until ctx is cancelled or l fails. On
// cancellation it closes l, lets each connection finish its in-flight
// requests, syncs the disks, closes the connections and returns nil.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if s.Backend == nil {
		return errors.New("nbd: Server.Backend is nil")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				s.logger().Warn("nbd: accepting connection; retrying", "err", err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accepting NBD connections: %w", err)
		}
		if tc, ok := c.(*net.TCPConn); ok {
			// Notice a node that was power-cycled or cut off mid-session
			// within about 30 s, so that its export is free again when it
			// reconnects (a second concurrent client is refused).
			tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3})
			setUserTimeout(tc, 30*time.Second)
			tc.SetNoDelay(true)
		}
		client := remoteAddrPort(c).Addr()
		if !s.shakes.Take(client, cmp.Or(s.MaxHandshakes, DefaultMaxHandshakes), cmp.Or(s.MaxHandshakesPerClient, DefaultMaxHandshakesPerClient)) {
			c.Close()
			if ok, dropped := s.lines.Allow(client.String()); ok {
				s.logger().Warn("nbd: closing a connection: too many handshakes in progress, from this client or in all",
					"client", client, "dropped_lines", dropped)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, c, func() { s.shakes.Give(client) })
		}()
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// claim marks exp as used by client and runs its Claim; it fails if
// another client has it or Claim refuses.
func (s *Server) claim(exp Export, client netip.AddrPort) error {
	s.mu.Lock()
	if s.active == nil {
		s.active = make(map[string]claimed)
	}
	if cur, ok := s.active[exp.Name]; ok {
		s.mu.Unlock()
		return fmt.Errorf("%w: export %q is in use by %v", errInUse, exp.Name, cur.client)
	}
	s.active[exp.Name] = claimed{client: client}
	s.mu.Unlock()
	if exp.Claim == nil {
		return nil
	}
	rel, err := exp.Claim()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		delete(s.active, exp.Name)
		return err
	}
	s.active[exp.Name] = claimed{client: client, release: rel}
	return nil
}

// errInUse refuses a second client of an export.
var errInUse = errors.New("export in use by another connection")

// claimed is an export in use.
type claimed struct {
	client  netip.AddrPort
	release func()
}

func (s *Server) release(name string) {
	s.mu.Lock()
	c := s.active[name]
	delete(s.active, name)
	s.mu.Unlock()
	if c.release != nil {
		c.release()
	}
}

func remoteAddrPort(c net.Conn) netip.AddrPort {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	return ap
}

// serveConn serves one connection; handshakeDone, if not nil, is called
// when its handshake ends.
func (s *Server) serveConn(ctx context.Context, c net.Conn, handshakeDone func()) {
	defer c.Close()
	client := remoteAddrPort(c)
	log := s.logger().With("client", client.String())
	stop := context.AfterFunc(ctx, func() {
		// Stop reading requests; give in-flight replies a moment to go out.
		c.SetReadDeadline(time.Now())
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	})
	defer stop()
	c.SetDeadline(time.Now().Add(cmp.Or(s.HandshakeTimeout, DefaultHandshakeTimeout)))
	sess := &session{srv: s, conn: c, client: client, log: log}
	exp, err := sess.handshake(ctx)
	if handshakeDone != nil {
		handshakeDone()
	}
	if err != nil {
		if !errors.Is(err, errClientAborted) && ctx.Err() == nil {
			log.Warn("nbd: handshake failed; connection closed", "err", err)
		}
		return
	}
	defer s.release(exp.Name)
	c.SetDeadline(time.Time{})
	// The handshake read through a small buffer (a half-open connection
	// costs little); requests get a large one.
	sess.br = bufio.NewReaderSize(sess.br, 128<<10)
	if ctx.Err() != nil {
		return
	}
	log = log.With("export", exp.Name)
	sess.log = log
	log.Debug("nbd: client connected", "size", exp.Size)
	err = sess.transmit(ctx, exp)
	if serr := syncDisk(exp.Disk); serr != nil {
		log.Error("nbd: syncing disk after disconnect", "err", serr)
	}
	switch {
	case err == nil:
		log.Debug("nbd: client disconnected")
	case ctx.Err() != nil:
		log.Info("nbd: server stopping; connection closed after in-flight requests", "err", err)
	default:
		log.Warn("nbd: connection dropped", "err", err)
	}
}
