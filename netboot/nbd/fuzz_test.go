package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"
)

// scriptConn is a net.Conn that reads a fixed script and discards writes.
type scriptConn struct {
	r *bytes.Reader
}

func (c scriptConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c scriptConn) Write(p []byte) (int, error) { return len(p), nil }
func (c scriptConn) Close() error                { return nil }
func (c scriptConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 10809}
}
func (c scriptConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c scriptConn) SetDeadline(t time.Time) error      { return nil }
func (c scriptConn) SetReadDeadline(t time.Time) error  { return nil }
func (c scriptConn) SetWriteDeadline(t time.Time) error { return nil }

// memDisk is an in-memory Disk.
type memDisk []byte

func (m memDisk) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m)) {
		return 0, io.EOF
	}
	return copy(p, m[off:]), nil
}

func (m memDisk) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }
func (m memDisk) Sync() error                              { return nil }

// FuzzSession feeds arbitrary bytes after the client flags: the server must
// never panic, whatever the client sends during the handshake or transmission.
func FuzzSession(f *testing.F) {
	opt := func(o uint32, data []byte) []byte {
		b := binary.BigEndian.AppendUint64(nil, magicIHaveOpt)
		b = binary.BigEndian.AppendUint32(b, o)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	req := func(typ uint16, off uint64, n uint32) []byte {
		b := binary.BigEndian.AppendUint32(nil, magicRequest)
		b = binary.BigEndian.AppendUint16(b, 0)
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint64(b, 1)
		b = binary.BigEndian.AppendUint64(b, off)
		return binary.BigEndian.AppendUint32(b, n)
	}
	flags := []byte{0, 0, 0, 3}
	f.Add(append(append(flags, opt(optExportName, []byte("d"))...), req(cmdRead, 0, 512)...))
	f.Add(append(append(flags, opt(optGo, []byte{0, 0, 0, 1, 'd', 0, 1, 0, 3})...), req(cmdWrite, 4000, 200)...))
	f.Add(append(flags, opt(optList, nil)...))
	f.Add(append(flags, opt(optInfo, []byte{0, 0, 0, 9})...))
	f.Add(append(append(flags, opt(optExportName, []byte("d"))...), req(cmdTrim, 1, 4095)...))
	f.Fuzz(func(t *testing.T, script []byte) {
		disk := make(memDisk, 4096)
		srv := &Server{
			Backend: staticBackend{"d": {Disk: disk, Size: int64(len(disk)), Client: netip.MustParseAddr("127.0.0.1")}},
			Log:     slog.New(slog.DiscardHandler),
		}
		srv.serveConn(context.Background(), scriptConn{bytes.NewReader(script)}, nil)
		if len(srv.active) != 0 {
			t.Fatalf("export still claimed after the connection ended: %v", srv.active)
		}
	})
}
