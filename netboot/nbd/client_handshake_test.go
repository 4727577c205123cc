package nbd

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
)

func TestHandshakeRefusals(t *testing.T) {
	// Not an NBD server.
	a, b := net.Pipe()
	go func() { b.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n\x00\x00\x00\x00")); b.Close() }()
	if _, err := Handshake(a, "k5"); err == nil {
		t.Error("handshake with a non-NBD peer succeeded")
	}
	// A server that drops the connection mid-negotiation.
	a, b = net.Pipe()
	go func() {
		g := binary.BigEndian.AppendUint64(nil, magicNBD)
		g = binary.BigEndian.AppendUint64(g, magicIHaveOpt)
		g = binary.BigEndian.AppendUint16(g, flagFixedNewstyle|flagNoZeroes)
		b.Write(g)
		io.ReadFull(b, make([]byte, 4))
		b.Close()
	}()
	if _, err := Handshake(a, "k5"); err == nil {
		t.Error("handshake with a vanishing server succeeded")
	}
}
