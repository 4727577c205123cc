package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestLeaseRenewal runs the NBD helper's lease renewal against dnsmasq
// with a 2-minute lease across two network namespaces: a client that got
// its address with /init's DHCP client first learns the lease with an
// INIT-REBOOT request (what happens after the kernel's ip=dhcp), then the
// helper's renewal loop renews at T1 (60 s) by unicast. dnsmasq's log must
// show the three requests and acknowledgements from the client's MAC, and
// the interface must keep its address.
func TestLeaseRenewal(t *testing.T) {
	if iface := os.Getenv("IMGBAKE_RENEW_HELPER"); iface != "" {
		renewHelper(iface)
		return
	}
	if testing.Short() {
		t.Skip("takes about 65 s (waits for a renewal at T1 of a 2-minute lease)")
	}
	cli, log := dnsmasqNetns(t, "2m")
	cmd := exec.Command("ip", "netns", "exec", cli, os.Args[0], "-test.run", "^TestLeaseRenewal$")
	cmd.Env = append(os.Environ(), "IMGBAKE_RENEW_HELPER=eth0")
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	timer := time.AfterFunc(80*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	var out strings.Builder
	renewed := false
	for sc := bufio.NewScanner(pipe); !renewed && sc.Scan(); {
		fmt.Fprintln(&out, sc.Text())
		renewed = strings.Contains(sc.Text(), "(RENEWING)")
	}
	if !renewed {
		t.Fatalf("no renewal within 80 s; client:\n%s\ndnsmasq:\n%s", out.String(), log.String())
	}
	if !strings.Contains(out.String(), "INIT-REBOOT ACK 10.78.0.1") || !strings.Contains(out.String(), "renewed for 2m0s from 10.78.0.1 (RENEWING)") {
		t.Errorf("client output:\n%s", out.String())
	}
	mac := regexp.MustCompile(`link/ether ([0-9a-f:]{17})`).FindStringSubmatch(runCmd(t, "ip", "-n", cli, "link", "show", "eth0"))
	if mac == nil {
		t.Fatal("no MAC address on eth0")
	}
	for _, what := range []string{"DHCPREQUEST", "DHCPACK"} {
		re := regexp.MustCompile(what + `\(lan0\) 10\.78\.0\.1\d\d ` + mac[1])
		if n := len(re.FindAllString(log.String(), -1)); n < 3 {
			t.Errorf("dnsmasq logged %d %s from %s, want 3 (DHCP, INIT-REBOOT, renewal):\n%s", n, what, mac[1], log.String())
		}
	}
	if addr := runCmd(t, "ip", "-n", cli, "-4", "-o", "addr", "show", "dev", "eth0"); !regexp.MustCompile(`inet 10\.78\.0\.1\d\d/24`).MatchString(addr) {
		t.Errorf("address after renewal: %s", addr)
	}
}

// TestLeaseRenewalNAK asks authoritative dnsmasq for an address it never
// leased: the renewer must report the address lost and leave it alone.
func TestLeaseRenewalNAK(t *testing.T) {
	if iface := os.Getenv("IMGBAKE_NAK_HELPER"); iface != "" {
		nakHelper(iface)
		return
	}
	cli, log := dnsmasqNetns(t, "2m", "--dhcp-authoritative")
	runCmd(t, "ip", "-n", cli, "addr", "add", "10.78.0.99/24", "dev", "eth0")
	runCmd(t, "ip", "-n", cli, "link", "set", "eth0", "up")
	cmd := exec.Command("ip", "netns", "exec", cli, os.Args[0], "-test.run", "^TestLeaseRenewalNAK$")
	cmd.Env = append(os.Environ(), "IMGBAKE_NAK_HELPER=eth0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s\ndnsmasq:\n%s", err, out, log.String())
	}
	if !strings.Contains(string(out), "refused it (NAK): this node's address 10.78.0.99 on eth0 is LOST") {
		t.Errorf("helper output:\n%s\ndnsmasq:\n%s", out, log.String())
	}
	if !strings.Contains(log.String(), "DHCPNAK(lan0) 10.78.0.99") {
		t.Errorf("dnsmasq did not NAK:\n%s", log.String())
	}
	if addr := runCmd(t, "ip", "-n", cli, "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(addr, "inet 10.78.0.99/24") {
		t.Errorf("address after the NAK: %s", addr)
	}
}

// renewHelper runs in the client namespace for TestLeaseRenewal.
func renewHelper(iface string) {
	nc, err := dhcpConfigure(iface)
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	// As after the kernel's ip=dhcp: the address, but not the lease.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	r := testRenewer(iface, func(l leaseInfo) {
		fmt.Printf("INIT-REBOOT ACK %s %s %s\n", l.server, l.addr, l.lease)
		cancel()
	})
	r.run(ctx, leaseInfo{ifname: iface, addr: nc.addr.To4()})
	cancel()
	// The helper's own loop, from the lease /init hands it.
	renewLease(context.Background(), nc.lease.String(), nil)
}

// nakHelper runs in the client namespace for TestLeaseRenewalNAK.
func nakHelper(iface string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := testRenewer(iface, nil)
	r.logf = func(level int, format string, args ...any) {
		fmt.Printf("<%d>"+format+"\n", append([]any{level}, args...)...)
		if level <= 3 {
			cancel()
		}
	}
	r.run(ctx, leaseInfo{ifname: iface, addr: []byte{10, 78, 0, 99}})
}

func testRenewer(iface string, onAck func(leaseInfo)) *renewer {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	return &renewer{
		tr:  &udpTransport{ifname: iface, hw: ifi.HardwareAddr, timeout: 2 * time.Second, tries: 3},
		clk: realClock{},
		logf: func(level int, format string, args ...any) {
			fmt.Printf("<%d>"+format+"\n", append([]any{level}, args...)...)
		},
		onAck: onAck,
	}
}

func runCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
