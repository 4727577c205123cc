package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const settingsCluster = `server: k1
k3s: {version: v1.34.2+k3s1}
user:
  name: alice
  sudo: nopasswd
  authorized-keys:
    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh alice@laptop
wifi: {ssid: home, country: gb}
timezone: Europe/London
locale: en_GB.UTF-8
keyboard: gb
nodes:
  - name: k1
  - name: k2
    user:
      authorized-keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJi bob@desk]
    wifi: {ssid: lab, hidden: true, country: DE}
    timezone: UTC
`

func TestNodeSettings(t *testing.T) {
	c, err := Load(writeFile(t, "imgbake.yaml", settingsCluster, 0o644))
	if err != nil {
		t.Fatal(err)
	}
	s := &Secrets{Token: "x", PasswordHash: "$6$salt$hash", WiFi: WiFiSecret{Passphrase: "home-pass"},
		Nodes: map[string]NodeSecrets{"k2": {WiFi: WiFiSecret{PSK: strings.Repeat("ab", 32)}}}}
	got := NodeSettings(c, c.Nodes[1], s)
	want := Settings{
		User:         &User{Name: "alice", Sudo: "nopasswd", AuthorizedKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh alice@laptop", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJi bob@desk"}},
		PasswordHash: "$6$salt$hash",
		WiFi:         &WiFi{SSID: "lab", Hidden: true, Country: "DE"},
		WiFiSecret:   WiFiSecret{PSK: strings.Repeat("ab", 32)},
		Timezone:     "UTC", Locale: "en_GB.UTF-8", Keyboard: "gb",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("k2 settings (-want +got):\n%s", d)
	}
	k1 := NodeSettings(c, c.Nodes[0], s)
	if k1.WiFi.Country != "GB" || k1.WiFiSecret.Passphrase != "home-pass" || k1.Timezone != "Europe/London" {
		t.Errorf("k1 settings = %+v", k1)
	}
	if w := LoginWarning(c, c.Nodes[0], k1); w != "" {
		t.Errorf("k1 has keys, yet warned: %s", w)
	}
	if w := LoginWarning(&Cluster{}, Node{Name: "x"}, Settings{}); !strings.Contains(w, "authorized-keys") {
		t.Errorf("no login warning for a node without keys or password: %q", w)
	}
}

func TestSettingsProblems(t *testing.T) {
	src := `server: k1
k3s: {version: v1.34.2+k3s1}
user: {name: Alice, sudo: maybe, authorized-keys: [ssh-rsa AAAA… truncated]}
wifi: {ssid: "", country: Britain}
timezone: Europe/Londn
locale: english
keyboard: "GB layout"
nodes:
  - name: k1
    wifi: {ssid: x}
`
	_, err := Load(writeFile(t, "imgbake.yaml", src, 0o644))
	if err == nil {
		t.Fatal("bad settings accepted")
	}
	for _, want := range []string{
		":3: user.name: \"Alice\" is not a user name",
		":3: user.sudo: \"maybe\"",
		":3: user.authorized-keys[0]: not an OpenSSH public key",
		":4: wifi.ssid: missing",
		":4: wifi.country: \"Britain\" is not a two-letter country code",
		":5: timezone: \"Europe/Londn\" is not a timezone name",
		":6: locale: \"english\"",
		":7: keyboard: \"GB layout\"",
		":10: nodes[0].wifi.country: missing",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("problems lack %q:\n%v", want, err)
		}
	}
}

func TestSecretSettings(t *testing.T) {
	const pass = "not-a-hash-but-a-password"
	p := writeFile(t, "s.yaml", "token: 0123456789abcdef0123\npassword-hash: "+pass+"\nwifi: {passphrase: short}\nnodes:\n  k2: {wifi: {psk: abc}}\n", 0o600)
	_, err := LoadSecrets(p)
	if err == nil {
		t.Fatal("bad secrets accepted")
	}
	for _, want := range []string{"password-hash: not a crypt(3) password hash", "wifi.passphrase: a WPA passphrase is 8 to 63", "nodes.k2.wifi.psk: a WPA PSK is 64 hex digits"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("problems lack %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), pass) || strings.Contains(err.Error(), "short") {
		t.Errorf("a secret is echoed in: %v", err)
	}
	// Written and read back.
	w := writeFile(t, "w.yaml", "", 0o600)
	s := &Secrets{Token: "0123456789abcdef0123", PasswordHash: "$y$j9T$salt.salt$hashhashhash", WiFi: WiFiSecret{Passphrase: "it's a #secret: yes"}}
	if err := WriteSecrets(w, s, true); err != nil {
		t.Fatal(err)
	}
	back, err := LoadSecrets(w)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(s, back); d != "" {
		t.Errorf("secrets read back differ (-wrote +read):\n%s", d)
	}
}
