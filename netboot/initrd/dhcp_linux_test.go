package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
	"github.com/imgbake/imgbake/internal/testlog"
)

// TestDHCPClient runs /init's DHCP client against dnsmasq across a veth
// pair between two network namespaces, then checks the address, the
// default route and the DNS servers it applied with ip(8).
func TestDHCPClient(t *testing.T) {
	if iface := os.Getenv("IMGBAKE_DHCP_HELPER"); iface != "" {
		nc, err := dhcpConfigure(iface)
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(1)
		}
		fmt.Printf("RESULT %s %s %s %s\n", nc.ifname, nc.addr, strings.Join(nc.dns, ","), nc.domain)
		return
	}
	cli, log := dnsmasqNetns(t, "1h")
	cmd := exec.Command("ip", "netns", "exec", cli, os.Args[0], "-test.run", "^TestDHCPClient$")
	cmd.Env = append(os.Environ(), "IMGBAKE_DHCP_HELPER=eth0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("DHCP client: %v\n%s\ndnsmasq:\n%s", err, out, log.String())
	}
	if !strings.Contains(string(out), "RESULT eth0 10.78.0.1") || !strings.Contains(string(out), " 10.78.0.53,10.78.0.54 cluster.lan") {
		t.Errorf("client result:\n%s", out)
	}
	addr := fixture.Run(t, "ip", "-n", cli, "-4", "-o", "addr", "show", "dev", "eth0")
	if !regexp.MustCompile(`inet 10\.78\.0\.1\d\d/24`).MatchString(addr) {
		t.Errorf("address: %s", addr)
	}
	if route := fixture.Run(t, "ip", "-n", cli, "-4", "route", "show", "default"); !strings.Contains(route, "default via 10.78.0.254 dev eth0") {
		t.Errorf("default route: %q", route)
	}
	if !strings.Contains(log.String(), "DHCPACK(lan0)") {
		t.Errorf("dnsmasq did not acknowledge:\n%s", log.String())
	}
}

// dnsmasqNetns creates two network namespaces joined by a veth pair:
// dnsmasq serves 10.78.0.100-110 with the given lease time on the server
// side; it returns the client namespace (whose interface is eth0) and
// dnsmasq's log. It skips the test without root, ip or dnsmasq.
func dnsmasqNetns(t *testing.T, lease string, extra ...string) (string, *testlog.Buffer) {
	t.Helper()
	fixture.NeedTools(t, "ip", "dnsmasq")
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	id := strconv.Itoa(os.Getpid())
	srv, cli := "imgbake-dhcps-"+id, "imgbake-dhcpc-"+id
	for _, ns := range []string{srv, cli} {
		fixture.Run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		fixture.Run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	veth := fmt.Sprintf("nbs%04d", os.Getpid()%10000) // pids may have fewer than 4 digits
	fixture.Run(t, "ip", "link", "add", veth, "netns", srv, "type", "veth", "peer", "name", "eth0", "netns", cli)
	fixture.Run(t, "ip", "-n", srv, "link", "set", veth, "name", "lan0")
	fixture.Run(t, "ip", "-n", srv, "addr", "add", "10.78.0.1/24", "dev", "lan0")
	fixture.Run(t, "ip", "-n", srv, "link", "set", "lan0", "up")
	dir := t.TempDir()
	args := []string{"netns", "exec", srv, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
		"--interface=lan0", "--bind-interfaces", "--dhcp-range=10.78.0.100,10.78.0.110,255.255.255.0," + lease,
		"--dhcp-option=option:router,10.78.0.254", "--dhcp-option=option:dns-server,10.78.0.53,10.78.0.54",
		"--domain=cluster.lan", "--dhcp-leasefile=" + filepath.Join(dir, "leases"), "--pid-file=" + filepath.Join(dir, "pid"),
		"--log-dhcp", "--log-facility=-"}
	d := exec.Command("ip", append(args, extra...)...)
	log := &testlog.Buffer{}
	d.Stdout, d.Stderr = log, log
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Process.Kill(); d.Wait() })

	return cli, log
}
