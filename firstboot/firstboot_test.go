package firstboot

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/profiles"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

const testToken = "0123456789abcdef0123456789abcdef-test-token"

// samples are existing files the edits run on.
var samples = map[string]string{
	"boot:/cmdline.txt":         "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n",
	"root:/boot/armbianEnv.txt": "verbosity=1\nbootlogo=false\nconsole=both\nextraargs=net.ifnames=0\noverlay_prefix=bcm2711\nrootdev=UUID=2a6a5c3e-6f36-4b89-a5e0-0f1c3a4b0b7d\nrootfstype=ext4\n",
	"root:/etc/hosts":           "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n\n127.0.1.1\t\traspberrypi\n",
	"root:/etc/dhcpcd.conf":     "hostname\nclientid\npersistent\noption rapid_commit\nslaac private\n",
	"boot:/user-data":           "#cloud-config\n# set by the user\nhostname: black-pearl\nmanage_etc_hosts: true\nusers:\n  - name: pirate\n    groups: users,docker\nruncmd:\n  - echo hi\n",
	"boot:/meta-data":           "instance-id: rpi-imager-1732000000\nlocal-hostname: raspberrypi\n",
	"boot:/network-config":      "network:\n  version: 2\n  wifis:\n    wlan0:\n      dhcp4: true\n      access-points:\n        \"home\":\n          password: \"wifi-secret\"\n  ethernets:\n    eth0:\n      dhcp4: true\n",
}

func cluster() *config.Cluster {
	return &config.Cluster{
		Server: "192.168.1.10",
		SSH:    config.SSH{AuthorizedKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtestkeytestkeytestkeytestkeytestkeytest admin@laptop"}},
	}
}

func mustProfile(t *testing.T, name string) *profiles.Profile {
	t.Helper()
	p, err := profiles.Load(name, "")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func bookworm() plan.OS {
	return plan.OS{Family: "raspios", Release: "bookworm", Version: "12", Arch: "arm64", BootMount: "/boot/firmware", CmdlinePart: plan.Boot, CmdlinePath: "/cmdline.txt", FirstBoot: "raspberrypi-sys-mods", Network: "NetworkManager"}
}

func cases(t *testing.T) map[string]Input {
	server := mustProfile(t, "server")
	server.K3s["cluster-init"] = true
	server.K3s["disable"] = []any{"traefik", "servicelb"}
	server.K3s["tls-san"] = []any{"k3s.example.com"}
	server.ControlPlaneTaint = true
	worker := mustProfile(t, "worker")
	worker.Labels = map[string]string{"example.com/pool": "general"}
	worker.Files = []profiles.File{{Path: "/etc/motd", Mode: "0644", Content: "k3s node\n"}}

	armhf := plan.OS{Family: "raspios", Release: "bullseye", Version: "11", Arch: "armhf", BootMount: "/boot", CmdlinePart: plan.Boot, CmdlinePath: "/cmdline.txt", FirstBoot: "raspi-config", Network: "dhcpcd"}
	trixie := plan.OS{Family: "raspios", Release: "trixie", Version: "13", Arch: "arm64", BootMount: "/boot/firmware", CmdlinePart: plan.Boot, CmdlinePath: "/cmdline.txt", FirstBoot: "cloud-init", CloudInit: true, Network: "netplan"}
	armbian := plan.OS{Family: "armbian", Release: "bookworm", Version: "24.11.1", Arch: "arm64", CmdlinePart: plan.Root, CmdlinePath: "/boot/armbianEnv.txt", FirstBoot: "armbian-firstrun", Network: "netplan"}
	buster := plan.OS{Family: "raspios", Release: "buster", Version: "10", Arch: "armhf", BootMount: "/boot", CmdlinePart: plan.Boot, CmdlinePath: "/cmdline.txt", FirstBoot: "raspi-config", Network: "systemd-networkd"}
	hypriot := plan.OS{Family: "hypriotos", Release: "buster", Version: "1.12.3", Arch: "armhf", BootMount: "/boot", CmdlinePart: plan.Boot, CmdlinePath: "/cmdline.txt", FirstBoot: "cloud-init", CloudInit: true, Network: "dhcpcd"}

	return map[string]Input{
		"bookworm-arm64-worker": {OS: bookworm(), Cluster: cluster(), Profile: worker, Token: testToken, K3sBinary: "/cache/k3s-arm64", AirgapImages: "/tmp/k3s-airgap-images-arm64.tar.zst",
			Node: config.Node{Name: "k5", Profile: "worker", Model: "pi4", Address: "192.168.1.15/24", Gateway: "192.168.1.1", DNS: []string{"192.168.1.1", "1.1.1.1"},
				Labels: map[string]string{"node-role.kubernetes.io/storage": "true", "example.com/disk": "ssd"}, Taints: []string{"example.com/disk=ssd:PreferNoSchedule"}}},
		"bullseye-armhf-server": {OS: armhf, Cluster: cluster(), Profile: server, Token: testToken, K3sBinary: "/cache/k3s-armhf",
			Node: config.Node{Name: "k1", Profile: "server", Model: "pi3+", Address: "192.168.1.10/24", Gateway: "192.168.1.1"}},
		"trixie-cloudinit-worker": {OS: trixie, Cluster: cluster(), Profile: mustProfile(t, "worker"), Token: testToken, K3sBinary: "/cache/k3s-arm64",
			Node: config.Node{Name: "k6", Model: "pi5", Address: "192.168.1.16/24", Gateway: "192.168.1.1", DNS: []string{"192.168.1.1"},
				SSH: config.SSH{User: "pi", AuthorizedKeys: []string{"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQtest pi@desk"}}}},
		"armbian-server": {OS: armbian, Cluster: &config.Cluster{Server: "https://k1.lan:6443"}, Profile: mustProfile(t, "server"), Token: testToken, K3sBinary: "/cache/k3s-arm64",
			Node: config.Node{Name: "k1", Address: "10.0.0.2/24", Gateway: "10.0.0.1", DNS: []string{"10.0.0.1"}}},
		"networkd-worker": {OS: buster, Cluster: cluster(), Profile: mustProfile(t, "worker"), Token: testToken, K3sBinary: "/cache/k3s-armhf",
			Node: config.Node{Name: "k7", Model: "pi3", Address: "10.1.0.7/16", Gateway: "10.1.0.1", DNS: []string{"10.1.0.1"}}},
		"hypriot-worker-dhcp": {OS: hypriot, Cluster: &config.Cluster{Server: "k1"}, Profile: mustProfile(t, "worker"), Token: testToken, K3sBinary: "/cache/k3s-armhf",
			Node: config.Node{Name: "k9"}},
	}
}

// render prints a plan as text, running each edit on its sample (and on
// nothing, for files an image may lack).
func render(t *testing.T, p *plan.Plan) string {
	var b bytes.Buffer
	for _, e := range p.Entries {
		fmt.Fprintf(&b, "== %s %s %s %04o %d:%d", e.Part, e.Kind, e.Path, e.Mode, e.UID, e.GID)
		if e.Secret {
			b.WriteString(" secret")
		}
		if e.Source != "" {
			fmt.Fprintf(&b, " source=%s", e.Source)
		}
		if e.Target != "" {
			fmt.Fprintf(&b, " -> %s", e.Target)
		}
		b.WriteString("\n")
		b.Write(e.Data)
		if len(e.Data) > 0 && !bytes.HasSuffix(e.Data, []byte("\n")) {
			b.WriteString("\n")
		}
	}
	for _, r := range p.Removes {
		fmt.Fprintf(&b, "== remove %s\n", r)
	}
	for _, e := range p.Edits {
		key := e.Part.String() + ":" + e.Path
		in, ok := samples[key]
		fmt.Fprintf(&b, "== edit %s %s %04o (%s)\n", e.Part, e.Path, e.Mode, e.Desc)
		var old []byte
		if ok {
			old = []byte(in)
		}
		out, err := e.Func(old)
		if err != nil {
			fmt.Fprintf(&b, "error: %v\n", err)
			continue
		}
		again, err := e.Func(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Errorf("edit %s is not idempotent:\n%s\nthen\n%s", key, out, again)
		}
		b.Write(out)
	}
	return b.String()
}

func TestGolden(t *testing.T) {
	for name, in := range cases(t) {
		t.Run(name, func(t *testing.T) {
			p, err := Plan(in)
			if err != nil {
				t.Fatal(err)
			}
			got := render(t, p)
			p2, _ := Plan(in)
			if again := render(t, p2); again != got {
				t.Fatal("Plan is not deterministic")
			}
			checkSecrets(t, in, p)
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./firstboot -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("plan differs from %s (-want +got):\n%s", golden, diff)
			}
		})
	}
}

// checkSecrets: the token and node password appear only in Secret entries,
// which are on Root with mode 0600 or tighter.
func checkSecrets(t *testing.T, in Input, p *plan.Plan) {
	t.Helper()
	secrets := []string{in.Token, NodePassword(in.Token, in.Node.Name)}
	found := 0
	for _, e := range p.Entries {
		has := false
		for _, s := range secrets {
			if bytes.Contains(e.Data, []byte(s)) {
				has = true
			}
		}
		if has && !e.Secret {
			t.Errorf("%s holds a secret but is not marked Secret", e.Path)
		}
		if e.Secret {
			found++
			if e.Part != plan.Root || e.Mode&0o177 != 0 {
				t.Errorf("secret %s: part %s mode %04o", e.Path, e.Part, e.Mode)
			}
		}
	}
	if found != 2 {
		t.Errorf("%d secret entries, want 2 (config.yaml, node password)", found)
	}
	for _, e := range p.Edits {
		out, err := e.Func([]byte(samples[e.Part.String()+":"+e.Path]))
		if err != nil {
			continue
		}
		for _, s := range secrets {
			if bytes.Contains(out, []byte(s)) {
				t.Errorf("edit of %s writes a secret", e.Path)
			}
		}
	}
}

func TestARMv6Refused(t *testing.T) {
	in := cases(t)["hypriot-worker-dhcp"]
	for _, m := range []string{"pi1", "pi0", "pi0w", "pizerow"} {
		in.Node.Model = m
		_, err := Plan(in)
		if err == nil || !strings.Contains(err.Error(), "k3s needs ARMv7 or newer: Pi 1 and Zero/Zero W cannot run it (Illegal instruction); Zero 2 W is fine") {
			t.Errorf("model %s: %v", m, err)
		}
	}
	in.Node.Model = "pi02w"
	if _, err := Plan(in); err != nil {
		t.Errorf("pi02w refused: %v", err)
	}
	in.Node.Model = ""
	w, err := Check(in)
	if err != nil || len(w) != 1 || !strings.Contains(w[0], "ARMv7") {
		t.Errorf("no-model armhf warning = %q, %v", w, err)
	}
	in.OS.Arch = "arm64"
	if w, _ := Check(in); len(w) != 0 {
		t.Errorf("arm64 warned: %q", w)
	}
}

func TestNodePasswordStable(t *testing.T) {
	a, b := NodePassword("tok", "k5"), NodePassword("tok", "k6")
	if a == b || len(a) != 64 || a != NodePassword("tok", "k5") || a == NodePassword("tok2", "k5") {
		t.Errorf("NodePassword: %s %s", a, b)
	}
}

func TestStaticNeedsKnownNetwork(t *testing.T) {
	in := cases(t)["bookworm-arm64-worker"]
	in.OS.Network = "connman"
	if _, err := Plan(in); err == nil || !strings.Contains(err.Error(), "remove address:") {
		t.Errorf("unknown network system: %v", err)
	}
}

func TestEditsOnMissingFiles(t *testing.T) {
	if got := string(editCmdline([]byte("a b cgroup_disable=memory cgroup_memory=1\nsecond line\n"))); got != "a b cgroup_memory=1 cgroup_enable=memory\n" {
		t.Errorf("editCmdline = %q", got)
	}
	out, _ := editArmbianEnv(nil)
	if string(out) != "extraargs=cgroup_memory=1 cgroup_enable=memory\n" {
		t.Errorf("editArmbianEnv(nil) = %q", out)
	}
	if got := string(editHosts([]byte("127.0.0.1 localhost"), "k2")); got != "127.0.0.1 localhost\n127.0.1.1\tk2\n" {
		t.Errorf("editHosts = %q", got)
	}
	if got := string(editUserData([]byte("#!/bin/sh\necho hi\n"), "k2")); got != "#!/bin/sh\necho hi\n" {
		t.Errorf("script user-data changed: %q", got)
	}
}
