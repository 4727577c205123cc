package dhcp

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// testNet is a pair of network namespaces joined by a veth pair: the
// server side "srv" (interface vs, 10.77.0.1/24) and the client side "cli"
// (interface vc, no address unless the test adds one).
type testNet struct {
	srv, cli string
}

var netnsSeq atomic.Int32

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// newTestNet creates the namespaces or skips the test when it cannot.
func newTestNet(t *testing.T) *testNet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces: run the tests as root (sudo go test) to include real-socket DHCP tests")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (apt-get install iproute2) to create network namespaces")
	}
	n := netnsSeq.Add(1)
	tn := &testNet{srv: fmt.Sprintf("ibk-dhcp-s%d-%d", os.Getpid(), n), cli: fmt.Sprintf("ibk-dhcp-c%d-%d", os.Getpid(), n)}
	if out, err := exec.Command("ip", "netns", "add", tn.srv).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace here (%v: %s): skipping real-socket DHCP test", err, out)
	}
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", tn.srv).Run()
		exec.Command("ip", "netns", "del", tn.cli).Run()
	})
	run(t, "ip", "netns", "add", tn.cli)
	run(t, "ip", "link", "add", "vs", "netns", tn.srv, "type", "veth", "peer", "name", "vc", "netns", tn.cli)
	run(t, "ip", "-n", tn.srv, "addr", "add", "10.77.0.1/24", "dev", "vs")
	for _, ns := range []string{tn.srv, tn.cli} {
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "-n", tn.srv, "link", "set", "vs", "up")
	run(t, "ip", "-n", tn.cli, "link", "set", "vc", "up")
	return tn
}

// inNetns runs f on an OS thread that has joined namespace ns; sockets f
// opens stay in ns. The thread is discarded afterwards.
func inNetns(t *testing.T, ns string, f func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("joining %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// listenIn opens a broadcast-capable UDP socket bound to ifname in ns.
func listenIn(t *testing.T, ns, ifname, addr string) net.PacketConn {
	t.Helper()
	var c net.PacketConn
	inNetns(t, ns, func() (err error) {
		c, err = Listen(context.Background(), ifname, addr)
		return err
	})
	t.Cleanup(func() { c.Close() })
	return c
}
