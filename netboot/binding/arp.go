package binding

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
)

// ARPTable reads the kernel's IPv4 neighbour table, /proc/net/arp, of the
// network namespace it was opened in.
type ARPTable struct {
	mu sync.Mutex
	f  *os.File
}

// OpenARP opens the neighbour table of the calling thread's network
// namespace (that of the process, unless the thread joined another). The
// file stays open: each lookup reads it again from the start.
func OpenARP() (*ARPTable, error) {
	f, err := os.Open("/proc/thread-self/net/arp")
	if err != nil {
		if f, err = os.Open("/proc/net/arp"); err != nil {
			return nil, fmt.Errorf("opening the neighbour table: %w", err)
		}
	}
	return &ARPTable{f: f}, nil
}

// Close closes the table.
func (t *ARPTable) Close() error { return t.f.Close() }

// MAC returns the MAC of a complete neighbour entry for a.
func (t *ARPTable) MAC(a netip.Addr) (net.HardwareAddr, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, err := t.f.Seek(0, io.SeekStart); err != nil {
		return nil, false
	}
	return parseARP(t.f, a)
}

// atfCom is the "complete entry" flag of /proc/net/arp (ATF_COM).
const atfCom = 0x2

// parseARP finds a in /proc/net/arp text:
//
//	IP address       HW type     Flags       HW address            Mask     Device
//	10.77.0.2        0x1         0x2         52:54:00:12:34:56     *        br0
func parseARP(r io.Reader, a netip.Addr) (net.HardwareAddr, bool) {
	want := []byte(a.Unmap().String())
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) < 4 || !bytes.Equal(f[0], want) {
			continue
		}
		flags, err := strconv.ParseUint(string(f[2]), 0, 32)
		if err != nil || flags&atfCom == 0 {
			continue
		}
		mac, err := net.ParseMAC(string(f[3]))
		if err != nil || len(mac) != 6 {
			continue
		}
		return mac, true
	}
	return nil, false
}
