package tftp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgbake/imgbake/internal/fixture"
	"github.com/imgbake/imgbake/internal/testlog"
	pintftp "github.com/pin/tftp/v3"
)

// testFiles maps "prefix/file" (or a root file) to contents.
type testFiles map[string][]byte

func (fs testFiles) Resolve(_ context.Context, req Request) (File, error) {
	key := req.File
	if req.Prefix != "" {
		key = req.Prefix + "/" + req.File
	}
	b, ok := fs[key]
	if !ok {
		return File{}, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	return File{Data: bytes.NewReader(b), Size: int64(len(b))}, nil
}

type testServer struct {
	addr *net.UDPAddr
	log  *testlog.Buffer
	mu   sync.Mutex
	reqs []Request
}

func (ts *testServer) requests() []Request {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]Request(nil), ts.reqs...)
}

// startServer serves r on a loopback port until the test ends.
func startServer(t testing.TB, r Resolver, timeout time.Duration) *testServer {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: conn.LocalAddr().(*net.UDPAddr), log: &testlog.Buffer{}}
	srv := &Server{
		Resolver: r,
		Log:      slog.New(slog.NewTextHandler(ts.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Timeout:  timeout,
		OnRequest: func(req Request) {
			ts.mu.Lock()
			defer ts.mu.Unlock()
			ts.reqs = append(ts.reqs, req)
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", ts.log.String())
		}
	})
	return ts
}

func pinGet(t *testing.T, addr *net.UDPAddr, name string, blksize int) ([]byte, error) {
	t.Helper()
	c, err := pintftp.NewClient(addr.String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetBlockSize(blksize)
	c.RequestTSize(true)
	c.SetTimeout(2 * time.Second)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, err
	}
	// pin/tftp's client forgets the OACK's tsize once WriteTo starts.
	tsize, ok := wt.(pintftp.IncomingTransfer).Size()
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return nil, err
	}
	// pin/tftp cannot send tsize=0: it drops the option for empty files.
	if (!ok && buf.Len() != 0) || tsize != int64(buf.Len()) {
		return nil, fmt.Errorf("tsize %d (sent: %v), got %d bytes", tsize, ok, buf.Len())
	}
	return buf.Bytes(), nil
}

func TestServePinClient(t *testing.T) {
	files := testFiles{
		"1234abcd/start4.elf":           fixture.RandomBytes(2_300_000, 1),
		"1234abcd/overlays/x.dtbo":      fixture.RandomBytes(1024*3, 2), // exact multiple of blksize
		"bootcode.bin":                  fixture.RandomBytes(52_000, 3),
		"dc-a6-32-01-36-c2/cmdline.txt": []byte("console=serial0 ip=dhcp\n"),
		"abcdef01/kernel_2712.img":      fixture.RandomBytes(700_000, 4),
		"abcdef01/empty":                {},
	}
	ts := startServer(t, files, 0)
	for name, want := range files {
		for _, blk := range []int{512, 1024, 1468} {
			got, err := pinGet(t, ts.addr, name, blk)
			if err != nil {
				t.Errorf("get %s blksize %d: %v", name, blk, err)
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("get %s blksize %d: got %d bytes, want %d (contents differ)", name, blk, len(got), len(want))
			}
		}
	}
	var sawSerial bool
	for _, r := range ts.requests() {
		if r.Prefix == "1234abcd" && r.Client.Addr().String() == "127.0.0.1" && r.Client.Port() != 0 {
			sawSerial = true
		}
	}
	if !sawSerial {
		t.Errorf("OnRequest never reported serial 1234abcd from 127.0.0.1: %+v", ts.requests())
	}
}

func TestServeRefuses(t *testing.T) {
	files := testFiles{"1234abcd/start4.elf": []byte("x"), "bootcode.bin": []byte("y")}
	ts := startServer(t, files, 0)
	for _, name := range []string{
		"../1234abcd/start4.elf", "/1234abcd/start4.elf", "1234abcd/../bootcode.bin",
		`1234abcd\start4.elf`, "ffffffff/start4.elf", "1234abcd/missing",
	} {
		if b, err := pinGet(t, ts.addr, name, 512); err == nil {
			t.Errorf("get %q succeeded with %q; want an error", name, b)
		}
	}
	log := ts.log.String()
	for _, want := range []string{`level=WARN msg="tftp: refusing request"`, `file=ffffffff/start4.elf`, `level=WARN msg="tftp: file not found"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if len(ts.requests()) != 0 {
		t.Errorf("OnRequest called for refused requests: %+v", ts.requests())
	}
	// A write request is refused too.
	c, _ := pintftp.NewClient(ts.addr.String())
	c.SetTimeout(time.Second)
	if rf, err := c.Send("1234abcd/start4.elf", "octet"); err == nil {
		if _, err := rf.ReadFrom(strings.NewReader("evil")); err == nil {
			t.Error("write request accepted")
		}
	}
	if got, err := pinGet(t, ts.addr, "1234abcd/start4.elf", 512); err != nil || string(got) != "x" {
		t.Errorf("after refused write: %q, %v", got, err)
	}
}

func TestServeIgnoresGarbage(t *testing.T) {
	want := fixture.RandomBytes(10_000, 9)
	ts := startServer(t, testFiles{"1234abcd/start4.elf": want}, 0)
	c, err := net.DialUDP("udp4", nil, ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 200; i++ {
		p := make([]byte, r.IntN(600))
		for j := range p {
			p[j] = byte(r.Uint32())
		}
		if len(p) >= 2 && i%3 == 0 {
			binary.BigEndian.PutUint16(p, uint16(1+i%6)) // plausible opcodes
		}
		c.Write(p)
	}
	for _, p := range [][]byte{{0, 1}, {0, 1, 0}, {0, 1, 'a', 0}, {0, 4, 0, 1}, {0, 5}, {0, 3, 0, 1, 'x'}} {
		c.Write(p)
	}
	got, err := pinGet(t, ts.addr, "1234abcd/start4.elf", 1024)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("get after garbage: %d bytes, %v", len(got), err)
	}
}

// rawClient is a minimal TFTP client that can talk through a lossy conn.
type rawClient struct {
	conn    net.PacketConn
	server  *net.UDPAddr
	timeout time.Duration
}

func rrq(name string, opts ...string) []byte {
	p := []byte{0, 1}
	for _, s := range append([]string{name, "octet"}, opts...) {
		p = append(append(p, s...), 0)
	}
	return p
}

func ack(block uint16) []byte { return []byte{0, 4, byte(block >> 8), byte(block)} }

// get fetches name with blksize, resending its last packet on timeout.
func (c *rawClient) get(name string, blksize int) ([]byte, error) {
	last := rrq(name, "blksize", fmt.Sprint(blksize), "tsize", "0")
	dst := net.Addr(c.server)
	var out []byte
	next := uint16(1)
	buf := make([]byte, 65536)
	for tries := 0; tries < 50; {
		if _, err := c.conn.WriteTo(last, dst); err != nil {
			return nil, err
		}
		c.conn.SetReadDeadline(time.Now().Add(c.timeout))
		n, from, err := c.conn.ReadFrom(buf)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			tries++
			continue
		} else if err != nil {
			return nil, err
		}
		p := buf[:n]
		switch binary.BigEndian.Uint16(p) {
		case 6: // OACK
			dst, last = from, ack(0)
			opts := bytes.Split(p[2:n-1], []byte{0})
			for i := 0; i+1 < len(opts); i += 2 {
				if string(opts[i]) == "blksize" {
					fmt.Sscan(string(opts[i+1]), &blksize)
				}
			}
		case 3: // DATA
			dst = from
			blk := binary.BigEndian.Uint16(p[2:])
			if blk == next {
				out = append(out, p[4:]...)
				last = ack(blk)
				next++
				if len(p)-4 < blksize {
					c.conn.WriteTo(last, dst)
					return out, nil
				}
			}
		case 5:
			return nil, fmt.Errorf("server error: %q", p[4:])
		}
	}
	return nil, errors.New("too many timeouts")
}

// lossyConn drops every nth packet in each direction.
type lossyConn struct {
	net.PacketConn
	every        int
	reads, sends int
	dropped      int
}

func (l *lossyConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, a, err := l.PacketConn.ReadFrom(p)
		if err != nil {
			return n, a, err
		}
		l.reads++
		if l.reads%l.every != 0 {
			return n, a, nil
		}
		l.dropped++
	}
}

func (l *lossyConn) WriteTo(p []byte, a net.Addr) (int, error) {
	l.sends++
	if l.sends%l.every == 0 {
		l.dropped++
		return len(p), nil
	}
	return l.PacketConn.WriteTo(p, a)
}

func TestServePacketLoss(t *testing.T) {
	want := fixture.RandomBytes(100_000, 5)
	ts := startServer(t, testFiles{"1234abcd/start4.elf": want}, 50*time.Millisecond)
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lc := &lossyConn{PacketConn: conn, every: 7}
	c := &rawClient{conn: lc, server: ts.addr, timeout: 80 * time.Millisecond}
	got, err := c.get("1234abcd/start4.elf", 1024)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d (contents differ)", len(got), len(want))
	}
	if lc.dropped < 15 {
		t.Fatalf("only %d packets dropped; the test did not exercise loss", lc.dropped)
	}
}

// TestServeLimits: a client that opens transfers and never acknowledges
// gets DefaultMaxPerClient of them, the rest are refused at once with
// "server busy"; another client is still served; the stalled transfers
// end after the retransmit timeouts.
func TestServeLimits(t *testing.T) {
	want := fixture.RandomBytes(100_000, 3)
	ts := startServer(t, testFiles{"1234abcd/kernel8.img": want}, 100*time.Millisecond)
	var conns []net.PacketConn
	for range DefaultMaxPerClient + 3 {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
		c.WriteTo(rrq("1234abcd/kernel8.img", "blksize", "1024"), ts.addr)
	}
	busy := 0
	buf := make([]byte, 2048)
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if binary.BigEndian.Uint16(buf) == 5 && bytes.Contains(buf[4:n], []byte("server busy")) {
			busy++
		}
	}
	if busy != 3 {
		t.Errorf("%d of %d stalled requests refused as busy, want 3", busy, len(conns))
	}
	if !strings.Contains(ts.log.String(), "too many transfers") {
		t.Error("no busy line logged")
	}
	// Another address is served meanwhile.
	c, err := net.ListenPacket("udp4", "127.0.0.2:0")
	if err != nil {
		t.Skip(err)
	}
	defer c.Close()
	if got, err := (&rawClient{conn: c, server: ts.addr, timeout: time.Second}).get("1234abcd/kernel8.img", 1024); err != nil || !bytes.Equal(got, want) {
		t.Errorf("another client during the stall: %d bytes, %v", len(got), err)
	}
	// The stalled transfers time out and free their slots.
	time.Sleep(100 * time.Millisecond * (DefaultRetries + 3))
	again, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if got, err := (&rawClient{conn: again, server: ts.addr, timeout: time.Second}).get("1234abcd/kernel8.img", 1024); err != nil || !bytes.Equal(got, want) {
		t.Errorf("after the stalled transfers timed out: %d bytes, %v", len(got), err)
	}
}
