package config

import (
	"strings"
	"testing"
)

const goodKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh alice@laptop"

// TestClusterConsistency checks the cross-node rejections: each names the
// file and line of the offending field and says what to do.
func TestClusterConsistency(t *testing.T) {
	src := `server: 192.168.1.10
k3s: {version: v1.36.4+k3s1}
ssh:
  authorized-keys:
    - ` + goodKey + `
    - ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQDf
nodes:
  - name: k1
    address: 192.168.1.11/24
    gateway: 192.168.1.1
  - name: k2
    address: 192.168.1.11/24
    netboot: {serial: 1a2b3c4d, mac: "DC:A6:32:01:36:C2"}
  - name: k3
    address: 192.168.1.255/24
    netboot: {serial: 1A2B3C4D}
  - name: k4
    address: 10.0.0.5/24
    gateway: 10.0.1.1
    netboot: {mac: dc-a6-32-01-36-c2}
  - name: k5
    model: pi02w
    netboot: {serial: 5a5a5a5a}
  - name: k6
    model: pi3a+
    netboot: {serial: 6a6a6a6a}
  - name: k7
    model: cm4
    netboot: {serial: 7a7a7a7a}
`
	p := writeFile(t, "imgbake.yaml", src, 0o644)
	_, err := Load(p)
	if err == nil {
		t.Fatal("Load accepted an inconsistent cluster")
	}
	msg := err.Error()
	for _, w := range []string{
		"imgbake.yaml:6: ssh.authorized-keys[1]: not an OpenSSH public key (ssh-rsa AAAA…gQDf, 32 characters of key data): the key data is cut short or mangled",
		"imgbake.yaml:12: nodes[1].address: address 192.168.1.11 is also k1's (line 9): give each node its own address",
		"imgbake.yaml:15: nodes[2].address: \"192.168.1.255/24\" is the network's broadcast address",
		"imgbake.yaml:16: nodes[2].netboot.serial: serial 1a2b3c4d is also k2's (line 13)",
		"imgbake.yaml:19: nodes[3].gateway: 10.0.1.1 is not in the node's network 10.0.0.0/24",
		"imgbake.yaml:20: nodes[3].netboot.mac: MAC dc:a6:32:01:36:c2 is also k2's (line 13)",
		"imgbake.yaml:23: nodes[4].netboot: a pi02w cannot boot from the network (it has no built-in Ethernet",
		"imgbake.yaml:26: nodes[5].netboot: a pi3a+ cannot boot from the network",
	} {
		if !strings.Contains(msg, w) {
			t.Errorf("error lacks %q; got:\n%s", w, msg)
		}
	}
	if strings.Contains(msg, "nodes[6]") {
		t.Errorf("a CM4 may network boot; got:\n%s", msg)
	}
}

func TestCheckAuthorizedKey(t *testing.T) {
	for _, k := range []string{
		goodKey,
		`from="192.168.1.0/24",no-agent-forwarding ` + goodKey,
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh",
	} {
		if err := CheckAuthorizedKey(k); err != nil {
			t.Errorf("CheckAuthorizedKey(%q) = %v, want nil", k, err)
		}
	}
	for k, want := range map[string]string{
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFhYWFhYWFh":     "cut short",
		"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIGFhYWFhYWFhYWFhYWFh": "cut short",
		"-----BEGIN OPENSSH PRIVATE KEY-----":                  "private key",
		goodKey + "\n" + goodKey:                               "line break",
		"hello world":                                          "no key type",
		"":                                                     "empty",
	} {
		err := CheckAuthorizedKey(k)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckAuthorizedKey(%q) = %v, want an error with %q", k, err, want)
		}
	}
}

func TestCheckServerAddress(t *testing.T) {
	const base = "k3s: {version: v1.36.4+k3s1}\nnodes:\n  - name: k1\n    profile: server\n    address: 192.168.1.11/24\n  - name: k2\n    profile: worker\n    address: 192.168.1.12/24\n"
	starts := func(n Node) bool { return n.Profile == "server" }
	for _, tc := range []struct {
		head, want string
	}{
		{"server: 192.168.1.10\n", "imgbake.yaml:6: nodes[0].address: k1 is the server (profile server) at 192.168.1.11, but agents join server: 192.168.1.10 (line 1) and would never reach it; set address: 192.168.1.10/24, or server: 192.168.1.11"},
		{"server: https://192.168.1.10:6443\n", "agents join server: https://192.168.1.10:6443"},
		{"server: 192.168.1.11\n", ""},
		{"server: k1.lan\n", ""},
		{"server: 192.168.1.10\nserver-address-check: off\n", ""},
	} {
		c, err := Load(writeFile(t, "imgbake.yaml", tc.head+base, 0o644))
		if err != nil {
			t.Fatal(err)
		}
		err = c.CheckServerAddress(starts)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.head, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: got %v, want %q", tc.head, err, tc.want)
		}
	}
	if _, err := Load(writeFile(t, "imgbake.yaml", "server: 192.168.1.10\nserver-address-check: no\n"+base, 0o644)); err == nil || !strings.Contains(err.Error(), ":2: server-address-check: \"no\": the only value is off") {
		t.Errorf("server-address-check: no: %v", err)
	}
}
