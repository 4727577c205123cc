package firstboot

import (
	"strings"
	"testing"

	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/config"
)

// Test secrets: a yescrypt and a sha512-crypt hash (of "raspberry"), a
// passphrase and a PSK. They must appear only in Secret entries.
const (
	testYescrypt = "$y$j9T$Rk5cRbM8yvDgCwCeyYdrm/$K0nMDiS9bSyxC9jsnjrS4aUcTSBQ3vQjLhv3S5YLmuD"
	testSHA512   = "$6$Qo4hbGdYbfVHCAuv$6Yf6qFvdjZCw/8MVBQbkUXqgWMrbP3U3gmOtOmbhcJ4JAbcCmn.k8MdLbg2v7STJpFujBs5xTQ3rbhHb2aYCu1"
	testPass     = "wifi pass \"with\" quotes"
	testPSK      = "3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
	aliceKey     = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDFTcd3cbfFW4RoFaOzo+Gor/TYtF/y90CA5B9aYzXoJ c@imgbake"
)

func settingsCluster(u *config.User, w *config.WiFi) *config.Cluster {
	c := cluster()
	c.User, c.WiFi = u, w
	c.Timezone, c.Locale, c.Keyboard = "Europe/Berlin", "de_DE.UTF-8", "de"
	return c
}

// addSettingsCases adds a golden case per base family with the first-boot
// settings (user, Wi-Fi, timezone, locale, keyboard).
func addSettingsCases(t *testing.T, m map[string]Input) {
	worker := mustProfile(t, "worker")
	os := func(name string) plan.OS { return m[name].OS }
	alice := &config.User{Name: "alice", AuthorizedKeys: []string{aliceKey}}
	home := &config.WiFi{SSID: "home net", Country: "DE"}
	hashed := &config.Secrets{Token: testToken, PasswordHash: testYescrypt, WiFi: config.WiFiSecret{Passphrase: testPass}}

	m["settings-bookworm-nm"] = Input{OS: bookworm(), Cluster: settingsCluster(alice, home), Secrets: hashed, Profile: worker, Token: testToken, K3sBinary: "/cache/k3s-arm64",
		Node: config.Node{Name: "k20", Model: "pi4"}}
	zero := bookworm()
	m["settings-zero2w-wifi-static"] = Input{OS: zero, Cluster: settingsCluster(&config.User{Name: "pi", Sudo: "nopasswd"}, &config.WiFi{SSID: "lab", Hidden: true, Country: "gb"}),
		Secrets: &config.Secrets{Token: testToken, WiFi: config.WiFiSecret{PSK: testPSK}}, Profile: worker, Token: testToken, K3sBinary: "/cache/k3s-arm64",
		Node: config.Node{Name: "k21", Model: "pi02w", Address: "192.168.1.21/24", Gateway: "192.168.1.1", DNS: []string{"192.168.1.1"}, SSH: config.SSH{AuthorizedKeys: []string{aliceKey}}}}
	m["settings-bullseye-dhcpcd"] = Input{OS: os("bullseye-armhf-server"), Cluster: settingsCluster(alice, home), Secrets: hashed, Profile: worker, Token: testToken, K3sBinary: "/cache/k3s-armhf",
		Node: config.Node{Name: "k22", Model: "pi3+"}}
	m["settings-trixie-cloudinit"] = Input{OS: os("trixie-cloudinit-worker"), Cluster: settingsCluster(alice, home), Secrets: hashed, Profile: worker, Token: testToken, K3sBinary: "/cache/k3s-arm64",
		Node: config.Node{Name: "k23", Model: "pi5", Address: "192.168.1.23/24", Gateway: "192.168.1.1"}}
	m["settings-armbian-netplan"] = Input{OS: os("armbian-server"), Cluster: settingsCluster(&config.User{Name: "alice", Sudo: "no"}, home), Secrets: hashed, Profile: worker, Token: testToken, K3sBinary: "/cache/k3s-arm64",
		Node: config.Node{Name: "k24"}}
	m["settings-buster-networkd"] = Input{OS: os("networkd-worker"), Cluster: settingsCluster(alice, home),
		Secrets: &config.Secrets{Token: testToken, PasswordHash: testSHA512, WiFi: config.WiFiSecret{Passphrase: testPass}}, Profile: worker, Token: testToken, K3sBinary: "/cache/k3s-armhf",
		Node: config.Node{Name: "k25", Model: "pi3"}}
	hyp := os("hypriot-worker-dhcp")
	hyp.Network = "ifupdown" // what image.Inspect detects for HypriotOS
	m["settings-hypriot-ifupdown"] = Input{OS: hyp, Cluster: settingsCluster(alice, home),
		Secrets: &config.Secrets{Token: testToken, PasswordHash: testSHA512}, Profile: worker, Token: testToken, K3sBinary: "/cache/k3s-armhf",
		Node: config.Node{Name: "k26", Model: "pi3"}}
}

// TestSettingsRefused: a yescrypt hash on a base whose glibc cannot check
// it, and a password without a user, are refused with what to do.
func TestSettingsRefused(t *testing.T) {
	in := cases(t)["settings-buster-networkd"]
	in.Secrets = &config.Secrets{Token: testToken, PasswordHash: testYescrypt}
	if _, err := Plan(in); err == nil || !strings.Contains(err.Error(), "--password-method sha512-crypt") {
		t.Errorf("yescrypt on buster: %v", err)
	}
	in = cases(t)["bookworm-arm64-worker"]
	in.Secrets = &config.Secrets{Token: testToken, PasswordHash: testYescrypt}
	if _, err := Plan(in); err == nil || !strings.Contains(err.Error(), "add user:") {
		t.Errorf("password without user: %v", err)
	}
	// A Zero 2 W without Wi-Fi is warned about, once per build.
	in = cases(t)["bookworm-arm64-worker"]
	in.Node.Model = "pi02w"
	w, err := Check(in)
	if err != nil || len(w) != 1 || !strings.Contains(w[0], "Zero 2 W has no Ethernet") {
		t.Errorf("pi02w without wifi: %q %v", w, err)
	}
}
