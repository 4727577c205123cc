package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// testClient is a minimal NBD client for tests: fixed newstyle handshake,
// then one request at a time.
type testClient struct {
	conn   net.Conn
	br     *bufio.Reader
	size   uint64
	flags  uint16
	cookie uint64
}

// optErr is an option error reply from the server.
type optErr struct {
	typ uint32
	msg string
}

func (e *optErr) Error() string { return fmt.Sprintf("option reply %#x: %s", e.typ, e.msg) }

// dialNBD connects from local (may be nil) to addr and returns a client
// after the greeting, before any option.
func dialNBD(addr string, local net.Addr) (*testClient, error) {
	d := net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &testClient{conn: conn, br: bufio.NewReader(conn)}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	var hello [18]byte
	if _, err := io.ReadFull(c.br, hello[:]); err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading greeting: %w", err)
	}
	if binary.BigEndian.Uint64(hello[:]) != magicNBD || binary.BigEndian.Uint64(hello[8:]) != magicIHaveOpt {
		conn.Close()
		return nil, fmt.Errorf("bad greeting %x", hello)
	}
	if err := binary.Write(conn, binary.BigEndian, uint32(flagFixedNewstyle|flagNoZeroes)); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *testClient) sendOpt(opt uint32, data []byte) error { return sendOpt(c.conn, opt, data) }

// readOptReply returns the type and data of the next option reply.
func (c *testClient) readOptReply(opt uint32) (uint32, []byte, error) { return readOptReply(c.br, opt) }

// goExport sends NBD_OPT_GO (or INFO) for name and reads the replies.
func (c *testClient) goExport(opt uint32, name string, infos ...uint16) error {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	if err := c.sendOpt(opt, b); err != nil {
		return err
	}
	for {
		typ, data, err := c.readOptReply(opt)
		switch {
		case err != nil:
			return err
		case typ == repAck:
			return nil
		case typ == repInfo && len(data) == 12 && binary.BigEndian.Uint16(data) == infoExport:
			c.size = binary.BigEndian.Uint64(data[2:])
			c.flags = binary.BigEndian.Uint16(data[10:])
		case typ == repInfo:
		default:
			return &optErr{typ, string(data)}
		}
	}
}

// cmdError is an NBD errno from a simple reply.
type cmdError uint32

func (e cmdError) Error() string { return fmt.Sprintf("NBD error %d", uint32(e)) }

// cmd sends one request and waits for its reply; for READ it returns data.
func (c *testClient) cmd(typ, flags uint16, off uint64, length uint32, payload []byte) ([]byte, error) {
	c.cookie++
	b := binary.BigEndian.AppendUint32(nil, magicRequest)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, c.cookie)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, length)
	if _, err := c.conn.Write(append(b, payload...)); err != nil {
		return nil, err
	}
	if typ == cmdDisc {
		return nil, nil
	}
	var h [16]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return nil, err
	}
	if binary.BigEndian.Uint32(h[:]) != magicSimpleResp || binary.BigEndian.Uint64(h[8:]) != c.cookie {
		return nil, fmt.Errorf("bad reply header %x", h)
	}
	if e := binary.BigEndian.Uint32(h[4:]); e != 0 {
		return nil, cmdError(e)
	}
	if typ != cmdRead {
		return nil, nil
	}
	data := make([]byte, length)
	_, err := io.ReadFull(c.br, data)
	return data, err
}

func (c *testClient) read(off uint64, n uint32) ([]byte, error) {
	return c.cmd(cmdRead, 0, off, n, nil)
}

func (c *testClient) write(off uint64, p []byte, flags uint16) error {
	_, err := c.cmd(cmdWrite, flags, off, uint32(len(p)), p)
	return err
}

func isErrno(err error, errno uint32) bool {
	var e cmdError
	return errors.As(err, &e) && uint32(e) == errno
}
