package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/imgbake/imgbake/netboot/nbd"
)

// Generic netlink interface of the kernel's NBD driver
// (include/uapi/linux/nbd-netlink.h). Unlike the ioctl interface it needs
// no process blocked in NBD_DO_IT, and a device whose connection died waits
// up to the dead-connection timeout for NBD_CMD_RECONFIGURE with a new
// socket: that is how a node survives a restart of the server.
const (
	nbdCmdConnect     = 1
	nbdCmdReconfigure = 3

	nbdAttrIndex           = 1
	nbdAttrSizeBytes       = 2
	nbdAttrBlockSizeBytes  = 3
	nbdAttrTimeout         = 4
	nbdAttrServerFlags     = 5
	nbdAttrSockets         = 7
	nbdAttrDeadConnTimeout = 8
	nbdSockItem            = 1
	nbdSockFD              = 1

	nlaNested = 0x8000

	ctrlCmdGetFamily   = 3
	ctrlAttrFamilyID   = 1
	ctrlAttrFamilyName = 2
)

// genl is a generic netlink socket talking to one family.
type genl struct {
	fd     int
	family uint16
	seq    uint32
}

func openGenl(name string) (*genl, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_GENERIC)
	if err != nil {
		return nil, fmt.Errorf("opening generic netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding generic netlink socket: %w", err)
	}
	g := &genl{fd: fd, family: unix.GENL_ID_CTRL}
	reply, err := g.request(ctrlCmdGetFamily, 1, attr(ctrlAttrFamilyName, append([]byte(name), 0)))
	if err != nil {
		g.close()
		return nil, fmt.Errorf("finding netlink family %s (is the module loaded?): %w", name, err)
	}
	for typ, val := range attrs(reply) {
		if typ == ctrlAttrFamilyID && len(val) >= 2 {
			g.family = binary.NativeEndian.Uint16(val)
			return g, nil
		}
	}
	g.close()
	return nil, fmt.Errorf("finding netlink family %s: no id in the reply", name)
}

func (g *genl) close() { unix.Close(g.fd) }

// request sends one command and returns the payload (attributes) of the
// reply, or nil for a bare acknowledgement.
func (g *genl) request(cmd, version uint8, payload []byte) ([]byte, error) {
	g.seq++
	msg := make([]byte, unix.NLMSG_HDRLEN+4, unix.NLMSG_HDRLEN+4+len(payload))
	msg = append(msg, payload...)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], g.family)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], g.seq)
	msg[16], msg[17] = cmd, version
	if err := unix.Sendto(g.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	var data []byte
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(g.fd, buf, 0)
		if err != nil {
			return nil, err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if m.Header.Seq != g.seq {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return nil, errors.New("short netlink error")
				}
				if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
					return nil, unix.Errno(-e)
				}
				return data, nil // the acknowledgement ends the exchange
			case unix.NLMSG_DONE:
				return data, nil
			default:
				if len(m.Data) >= 4 {
					data = append([]byte(nil), m.Data[4:]...)
				}
			}
		}
	}
}

// attr encodes one netlink attribute, padded to 4 bytes.
func attr(typ uint16, val []byte) []byte {
	b := make([]byte, 4, 4+len(val)+3)
	binary.NativeEndian.PutUint16(b, uint16(4+len(val)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.NativeEndian.AppendUint64(nil, v) }

// attrs iterates over the attributes in b.
func attrs(b []byte) func(func(uint16, []byte) bool) {
	return func(yield func(uint16, []byte) bool) {
		for len(b) >= 4 {
			l := int(binary.NativeEndian.Uint16(b))
			if l < 4 || l > len(b) {
				return
			}
			if !yield(binary.NativeEndian.Uint16(b[2:])&^nlaNested, b[4:l]) {
				return
			}
			l = (l + 3) &^ 3
			if l > len(b) {
				return
			}
			b = b[l:]
		}
	}
}

// socketsAttr is NBD_ATTR_SOCKETS holding one socket.
func socketsAttr(fd int) []byte {
	return attr(nbdAttrSockets|nlaNested, attr(nbdSockItem|nlaNested, attr(nbdSockFD, u32(uint32(fd)))))
}

// nbdConnect attaches the connected socket fd to /dev/nbd<index>.
func nbdConnect(index uint32, fd int, exp nbd.ClientExport, deadConn uint64) error {
	g, err := openGenl("nbd")
	if err != nil {
		return err
	}
	defer g.close()
	var p []byte
	p = append(p, attr(nbdAttrIndex, u32(index))...)
	p = append(p, attr(nbdAttrSizeBytes, u64(exp.Size))...)
	p = append(p, attr(nbdAttrBlockSizeBytes, u64(512))...)
	p = append(p, attr(nbdAttrTimeout, u64(30))...)
	p = append(p, attr(nbdAttrDeadConnTimeout, u64(deadConn))...)
	p = append(p, attr(nbdAttrServerFlags, u64(uint64(exp.Flags)))...)
	p = append(p, socketsAttr(fd)...)
	if _, err := g.request(nbdCmdConnect, 1, p); err != nil {
		return fmt.Errorf("attaching /dev/nbd%d: %w", index, err)
	}
	return nil
}

// nbdReconfigure gives /dev/nbd<index> a new socket in place of a dead one.
func nbdReconfigure(index uint32, fd int) error {
	g, err := openGenl("nbd")
	if err != nil {
		return err
	}
	defer g.close()
	p := append(attr(nbdAttrIndex, u32(index)), socketsAttr(fd)...)
	if _, err := g.request(nbdCmdReconfigure, 1, p); err != nil {
		return fmt.Errorf("reconnecting /dev/nbd%d: %w", index, err)
	}
	return nil
}
