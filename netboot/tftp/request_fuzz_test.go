package tftp

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/imgbake/imgbake/internal/fixture"
)

// FuzzServerRequest sends untrusted packets (read and write requests with
// any options, ACKs, errors, garbage) to a running server on loopback. It
// must never crash or stop serving, and a DATA reply may only carry the
// start of a file the resolver has.
func FuzzServerRequest(f *testing.F) {
	rrq := func(name string, opts ...string) []byte {
		b := append([]byte{0, 1}, name...)
		b = append(b, 0)
		b = append(b, "octet\x00"...)
		for _, o := range opts {
			b = append(append(b, o...), 0)
		}
		return b
	}
	f.Add(rrq("bootcode.bin"))
	f.Add(rrq("1234abcd/start4.elf", "tsize", "0", "blksize", "1024"))
	f.Add(rrq("1234abcd/start4.elf", "blksize", "1468", "windowsize", "4", "timeout", "1"))
	f.Add(rrq("../../etc/passwd"))
	f.Add(rrq("1234abcd/../bootcode.bin", "blksize", "65536"))
	f.Add([]byte("\x00\x02bootcode.bin\x00octet\x00"))
	f.Add([]byte("\x00\x04\x00\x01"))
	f.Add([]byte("\x00\x05\x00\x01oops\x00"))
	f.Add([]byte{0, 1})
	files := testFiles{
		"bootcode.bin":        fixture.RandomBytes(5000, 3),
		"1234abcd/start4.elf": fixture.RandomBytes(70_000, 1),
		"1234abcd/empty":      {},
	}
	ts := startServer(f, files, 50*time.Millisecond)
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.Close() })
	n := 0
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if len(pkt) > 1500 {
			return
		}
		if _, err := conn.WriteTo(pkt, ts.addr); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 70_000)
		for {
			conn.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
			k, from, err := conn.ReadFrom(buf)
			if err != nil {
				break
			}
			if k >= 2 && (buf[1] == 3 || buf[1] == 6) {
				// End the transfer (RFC 1350 error 0), as a client that got
				// what it wanted does, so transfers do not pile up.
				conn.WriteTo([]byte("\x00\x05\x00\x00done\x00"), from)
			}
			if k >= 4 && buf[1] == 3 && buf[2] == 0 && buf[3] == 1 { // DATA block 1
				data, ok := buf[4:k], false
				for _, c := range files {
					ok = ok || bytes.HasPrefix(c, data)
				}
				if !ok {
					t.Fatalf("DATA block 1 of %d bytes that starts no served file", len(data))
				}
			}
		}
		// Now and then, the server must still serve a real client.
		if n++; n%200 == 0 {
			got, err := pinGet(t, ts.addr, "bootcode.bin", 1024)
			if err != nil { // a per-client limit may still count ended transfers
				time.Sleep(500 * time.Millisecond)
				got, err = pinGet(t, ts.addr, "bootcode.bin", 1024)
			}
			if err != nil || !bytes.Equal(got, files["bootcode.bin"]) {
				t.Fatalf("server stopped serving after %d packets: %v", n, err)
			}
		}
	})
}
