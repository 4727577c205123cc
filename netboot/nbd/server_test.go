package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imgbake/imgbake/internal/fixture"
	"github.com/imgbake/imgbake/internal/testlog"
)

// waitLog waits until the log contains want.
func waitLog(t *testing.T, log *testlog.Buffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if strings.Contains(log.String(), want) {
			return
		}
	}
	t.Errorf("log lacks %q:\n%s", want, log.String())
}

// diskFile creates a file holding data and returns it open read-write.
func diskFile(t *testing.T, data []byte) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// staticBackend serves a fixed set of exports.
type staticBackend map[string]Export

func (b staticBackend) Export(_ context.Context, name string, _ netip.Addr) (Export, error) {
	e, ok := b[name]
	if !ok {
		return Export{}, fmt.Errorf("%q: %w", name, ErrUnknownExport)
	}
	return e, nil
}

func (b staticBackend) List(_ context.Context, client netip.Addr) ([]string, error) {
	var names []string
	for n, e := range b {
		if e.Client == client {
			names = append(names, n)
		}
	}
	return names, nil
}

type testServer struct {
	addr   string
	log    *testlog.Buffer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// stop cancels the server and waits for Serve to return.
func (ts *testServer) stop(t testing.TB) {
	t.Helper()
	ts.once.Do(func() {
		ts.cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
}

func startServerOn(t testing.TB, b Backend, addr string, opts ...func(*Server)) *testServer {
	t.Helper()
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{addr: l.Addr().String(), log: &testlog.Buffer{}, cancel: cancel, done: make(chan error, 1)}
	srv := &Server{Backend: b, Log: slog.New(slog.NewTextHandler(ts.log, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, o := range opts {
		o(srv)
	}
	go func() { ts.done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		ts.stop(t)
		if t.Failed() {
			t.Logf("server log:\n%s", ts.log.String())
		}
	})
	return ts
}

// attach connects to the server and picks export with NBD_OPT_GO (asking
// for infos); a failure fails t. The connection closes when t ends.
func (ts *testServer) attach(t testing.TB, export string, infos ...uint16) *testClient {
	t.Helper()
	c, err := dialNBD(ts.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.conn.Close() })
	if err := c.goExport(optGo, export, infos...); err != nil {
		t.Fatalf("attaching %s: %v", export, err)
	}
	return c
}

func startServer(t *testing.T, b Backend) *testServer { return startServerOn(t, b, "127.0.0.1:0") }

var localhost = netip.MustParseAddr("127.0.0.1")

func TestReadWriteFlushTrim(t *testing.T) {
	const size = 4 << 20
	orig := fixture.RandomBytes(size, 1)
	f := diskFile(t, orig)
	ts := startServer(t, staticBackend{"node1": {Disk: f, Size: size, Client: localhost}})
	c := ts.attach(t, "node1", infoBlockSize)
	if want := uint16(tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim); c.size != size || c.flags&want != want {
		t.Fatalf("size %d flags %#x; want %d, flags including %#x", c.size, c.flags, size, want)
	}
	got, err := c.read(0, size)
	if err != nil || !bytes.Equal(got, orig) {
		t.Fatalf("read whole disk: %v (equal %v)", err, bytes.Equal(got, orig))
	}
	patch := fixture.RandomBytes(100_000, 2)
	if err := c.write(12345, patch, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.write(size-4096, patch[:4096], cmdFlagFUA); err != nil {
		t.Fatal(err)
	}
	if _, err := c.cmd(cmdFlush, 0, 0, 0, nil); err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), orig...)
	copy(want[12345:], patch)
	copy(want[size-4096:], patch[:4096])
	onDisk, _ := os.ReadFile(f.Name())
	if !bytes.Equal(onDisk, want) {
		t.Fatal("file contents differ after WRITE+FLUSH")
	}
	var before, after syscall.Stat_t
	syscall.Stat(f.Name(), &before)
	if _, err := c.cmd(cmdTrim, 0, 1<<20, 2<<20, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.cmd(cmdWriteZeroes, cmdFlagNoHole, 0, 4096, nil); err != nil {
		t.Fatal(err)
	}
	clear(want[1<<20 : 3<<20])
	clear(want[:4096])
	if got, err := c.read(0, size); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read after TRIM: %v (equal %v)", err, bytes.Equal(got, want))
	}
	syscall.Stat(f.Name(), &after)
	if after.Blocks >= before.Blocks {
		t.Logf("TRIM punched no hole (blocks %d -> %d): the file system may not support it", before.Blocks, after.Blocks)
	}
	c.cmd(cmdDisc, 0, 0, 0, nil)
	waitLog(t, ts.log, `msg="nbd: client disconnected"`)
}

func TestBadRequests(t *testing.T) {
	const size = 1 << 20
	f := diskFile(t, fixture.RandomBytes(size, 3))
	ts := startServer(t, staticBackend{"node1": {Disk: f, Size: size, Client: localhost}})
	c := ts.attach(t, "node1")
	if _, err := c.read(size-10, 11); !isErrno(err, errInval) {
		t.Errorf("read past end: %v, want EINVAL", err)
	}
	if _, err := c.read(1<<63, 4096); !isErrno(err, errInval) {
		t.Errorf("read at 2^63: %v, want EINVAL", err)
	}
	if _, err := c.read(^uint64(0)-10, 4096); !isErrno(err, errInval) {
		t.Errorf("read wrapping around: %v, want EINVAL", err)
	}
	if err := c.write(size-1, []byte{1, 2}, 0); !isErrno(err, errNoSpc) {
		t.Errorf("write past end: %v, want ENOSPC", err)
	}
	if _, err := c.cmd(cmdTrim, 0, size, 1, nil); !isErrno(err, errInval) {
		t.Errorf("trim past end: %v, want EINVAL", err)
	}
	if _, err := c.cmd(42, 0, 0, 0, nil); !isErrno(err, errInval) {
		t.Errorf("unknown command: %v, want EINVAL", err)
	}
	if got, err := c.read(0, 16); err != nil || len(got) != 16 {
		t.Fatalf("connection unusable after errors: %v", err)
	}
	// Bad magic desynchronises the stream: the server drops the connection.
	c.conn.Write(bytes.Repeat([]byte{0xff}, 28))
	c.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.br.ReadByte(); err == nil {
		t.Error("connection still open after bad magic")
	}
	waitLog(t, ts.log, "bad request magic")
	// The server still serves.
	ts.attach(t, "node1")
}

func TestOptions(t *testing.T) {
	f := diskFile(t, make([]byte, 8192))
	ts := startServer(t, staticBackend{
		"node1": {Disk: f, Size: 8192, Client: localhost},
		"node2": {Disk: f, Size: 8192, Client: netip.MustParseAddr("10.0.0.2")},
	})
	c, err := dialNBD(ts.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	c.sendOpt(optList, nil)
	var names []string
	for {
		typ, data, err := c.readOptReply(optList)
		if err != nil {
			t.Fatal(err)
		}
		if typ == repAck {
			break
		}
		names = append(names, string(data[4:]))
	}
	if len(names) != 1 || names[0] != "node1" {
		t.Errorf("LIST = %q, want only this client's export [node1]", names)
	}
	c.sendOpt(99, []byte("junk"))
	if typ, _, err := c.readOptReply(99); err != nil || typ != repErrUnsup {
		t.Errorf("unknown option: reply %#x, %v; want NBD_REP_ERR_UNSUP", typ, err)
	}
	var oe *optErr
	if err := c.goExport(optInfo, "nosuch"); !errors.As(err, &oe) || oe.typ != repErrUnknown {
		t.Errorf("INFO nosuch: %v, want NBD_REP_ERR_UNKNOWN", err)
	}
	if err := c.goExport(optInfo, "node2"); !errors.As(err, &oe) || oe.typ != repErrUnknown || oe.msg != refusal {
		t.Errorf("INFO for another node's export: %v, want NBD_REP_ERR_UNKNOWN %q (the same as for no export)", err, refusal)
	}
	if err := c.goExport(optInfo, "node1"); err != nil || c.size != 8192 {
		t.Errorf("INFO node1: size %d, %v", c.size, err)
	}
	c.sendOpt(optExportName, []byte("node1"))
	var reply [10]byte
	if _, err := c.br.Read(reply[:]); err != nil {
		t.Fatal(err)
	}
	if got, err := c.read(0, 512); err != nil || len(got) != 512 {
		t.Errorf("read after EXPORT_NAME: %v", err)
	}
	c3, err := dialNBD(ts.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.conn.Close()
	c3.sendOpt(optAbort, nil)
	if typ, _, err := c3.readOptReply(optAbort); err != nil || typ != repAck {
		t.Errorf("ABORT: %#x, %v", typ, err)
	}
}

func TestClientAddress(t *testing.T) {
	other := netip.MustParseAddr("127.0.0.2")
	f := diskFile(t, make([]byte, 4096))
	ts := startServer(t, staticBackend{"node2": {Disk: f, Size: 4096, Client: other}})
	c, err := dialNBD(ts.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	var oe *optErr
	if err := c.goExport(optGo, "node2"); !errors.As(err, &oe) || oe.typ != repErrUnknown || strings.Contains(oe.msg, "127.0.0.2") {
		t.Fatalf("GO from 127.0.0.1: %v, want NBD_REP_ERR_UNKNOWN naming no address", err)
	}
	waitLog(t, ts.log, "served only to its node's address 127.0.0.2")
	c2, err := dialNBD(ts.addr, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("cannot connect from 127.0.0.2: %v", err)
	}
	defer c2.conn.Close()
	if err := c2.goExport(optGo, "node2"); err != nil {
		t.Fatalf("GO from 127.0.0.2: %v", err)
	}
}

func TestOneClientPerExportAndReconnect(t *testing.T) {
	f := diskFile(t, make([]byte, 1<<20))
	b := staticBackend{"node1": {Disk: f, Size: 1 << 20, Client: localhost}}
	ts := startServer(t, b)
	c1, err := dialNBD(ts.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c1.goExport(optGo, "node1"); err != nil {
		t.Fatal(err)
	}
	if err := c1.write(0, []byte("first"), 0); err != nil {
		t.Fatal(err)
	}
	c2, err := dialNBD(ts.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	var oe *optErr
	if err := c2.goExport(optGo, "node1"); !errors.As(err, &oe) || oe.typ != repErrPolicy {
		t.Fatalf("second client: %v, want NBD_REP_ERR_POLICY", err)
	}
	waitLog(t, ts.log, "refusing second client")
	c2.conn.Close()
	c1.cmd(cmdDisc, 0, 0, 0, nil)
	c1.conn.Close()
	waitLog(t, ts.log, "client disconnected")
	c3 := ts.attach(t, "node1")
	if got, err := c3.read(0, 5); err != nil || string(got) != "first" {
		t.Fatalf("read after reconnect: %q, %v", got, err)
	}
}

// TestServerRestart: stopping the server closes connections after their
// in-flight requests; a new server on the same address serves the same data.
func TestServerRestart(t *testing.T) {
	f := diskFile(t, make([]byte, 1<<20))
	b := staticBackend{"node1": {Disk: f, Size: 1 << 20, Client: localhost}}
	ts := startServer(t, b)
	c := ts.attach(t, "node1")
	data := fixture.RandomBytes(300_000, 5)
	if err := c.write(4096, data, 0); err != nil {
		t.Fatal(err)
	}
	ts.stop(t)
	c.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.br.ReadByte(); err == nil {
		t.Fatal("connection open after the server stopped")
	}
	ts2 := startServerOn(t, b, ts.addr)
	c2, err := dialNBD(ts2.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.conn.Close()
	if err := c2.goExport(optGo, "node1"); err != nil {
		t.Fatalf("reconnect to the restarted server: %v", err)
	}
	if got, err := c2.read(4096, uint32(len(data))); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after restart: %v (equal %v)", err, bytes.Equal(got, data))
	}
}

// startServer2 starts a quiet server for benchmarks and returns its address.
func startServer2(b testing.TB, be Backend) string {
	ts := startServerOn(b, be, "127.0.0.1:0")
	return ts.addr
}

// TestHandshakeLimits: connections that never finish their handshake are
// bounded per address; the next one is closed at once, another address
// is served, and a stalled handshake ends at the deadline.
func TestHandshakeLimits(t *testing.T) {
	f := diskFile(t, make([]byte, 4096))
	ts := startServerOn(t, staticBackend{"node1": {Disk: f, Size: 4096, Client: netip.MustParseAddr("127.0.0.2")}}, "127.0.0.1:0",
		func(s *Server) { s.HandshakeTimeout = 500 * time.Millisecond })
	var stalled []net.Conn
	for range DefaultMaxHandshakesPerClient {
		c, err := dialNBD(ts.addr, nil) // greeting read, no option sent
		if err != nil {
			t.Fatal(err)
		}
		defer c.conn.Close()
		stalled = append(stalled, c.conn)
	}
	if c, err := dialNBD(ts.addr, nil); err == nil {
		c.conn.Close()
		t.Error("a connection beyond the per-address limit got a greeting")
	}
	waitLog(t, ts.log, "too many handshakes in progress")
	c, err := dialNBD(ts.addr, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("cannot connect from 127.0.0.2: %v", err)
	}
	defer c.conn.Close()
	if err := c.goExport(optGo, "node1"); err != nil {
		t.Errorf("another address during the stall: %v", err)
	}
	// The stalled handshakes end at the deadline.
	for _, s := range stalled {
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := s.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a stalled handshake was not closed by the server: %v", err)
		}
	}
	if c, err := dialNBD(ts.addr, nil); err != nil {
		t.Errorf("after the stalled handshakes ended: %v", err)
	} else {
		c.conn.Close()
	}
}
