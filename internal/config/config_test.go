package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
)

func writeFile(t *testing.T, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTemplateLoads(t *testing.T) {
	p := writeFile(t, "imgbake.yaml", string(Template(TemplateOptions{Server: "https://10.0.0.1:6443"})), 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatalf("Load(template): %v", err)
	}
	if len(c.Nodes) != 3 || c.Nodes[0].Profile != "server" || c.K3s.ReleaseURL != DefaultReleaseURL || c.OutputDir != "out" {
		t.Errorf("unexpected cluster: %+v", c)
	}
	if c.Nodes[1].Labels["example.com/disk"] != "ssd" {
		t.Errorf("labels = %v", c.Nodes[1].Labels)
	}
	if got := c.Path(c.Base); got != filepath.Join(filepath.Dir(p), "2024-11-19-raspios-bookworm-arm64-lite.img.xz") {
		t.Errorf("Path(base) = %s", got)
	}
}

func TestLoadProblems(t *testing.T) {
	src := `server: k1
k3s:
  version: 1.31.4
nodes:
  - name: k2
    profile: worker
    lables: {a: b}
  - name: K3
    labels:
      example.com/ok: "yes"
      kubernetes.io/role: worker
      bad_prefix/x: y
    taints: ["a=b:NoSchedul", "c:NoExecute"]
    address: 192.168.1.21/24
    gateway: 10.0.0.1
    model: pi9
  - name: k2
    netboot: {serial: xyz}
    labels:
      node-role.kubernetes.io/a: "true"
      node-role.kubernetes.io/b: "true"
`
	p := writeFile(t, "imgbake.yaml", src, 0o644)
	_, err := Load(p)
	if err == nil {
		t.Fatal("Load accepted a bad file")
	}
	want := []string{
		"imgbake.yaml:3: k3s.version: \"1.31.4\" is not a k3s release tag",
		"imgbake.yaml:7: nodes[0].lables: unknown field \"lables\" (did you mean \"labels\"?)",
		"imgbake.yaml:8: nodes[1].name: \"K3\" has upper-case letters",
		"imgbake.yaml:11: nodes[1].labels.kubernetes.io/role: label \"kubernetes.io/role\" is in the kubernetes.io/k8s.io namespace",
		"imgbake.yaml:12: nodes[1].labels.bad_prefix/x: label key \"bad_prefix/x\": prefix",
		"imgbake.yaml:13: nodes[1].taints[0]: taint \"a=b:NoSchedul\": effect \"NoSchedul\" must be",
		"imgbake.yaml:15: nodes[1].gateway: 10.0.0.1 is not in the node's network 192.168.1.0/24",
		"imgbake.yaml:16: nodes[1].model: unknown model \"pi9\"",
		"imgbake.yaml:17: nodes[2].name: node \"k2\" is listed twice (also at line 5)",
		"imgbake.yaml:18: nodes[2].netboot.serial: \"xyz\"",
		"nodes[2].labels: a node gets one role label",
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error lacks %q; got:\n%s", w, msg)
		}
	}
	if strings.Contains(msg, "c:NoExecute") {
		t.Errorf("valid taint reported: %s", msg)
	}
}

func TestServerURL(t *testing.T) {
	for in, want := range map[string]string{
		"k1":                     "https://k1:6443",
		"192.168.1.10":           "https://192.168.1.10:6443",
		"k1.lan:7443":            "https://k1.lan:7443",
		"https://k1.example.com": "https://k1.example.com",
		"https://10.0.0.1:6443/": "https://10.0.0.1:6443",
		"fd00::1":                "https://[fd00::1]:6443",
	} {
		got, err := ServerURL(in)
		if err != nil || got != want {
			t.Errorf("ServerURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"http://k1", "k1:99999", "bad host", "https://k1/path"} {
		if _, err := ServerURL(bad); err == nil {
			t.Errorf("ServerURL(%q) accepted", bad)
		}
	}
}

func TestTaints(t *testing.T) {
	for _, ok := range []string{"a=b:NoSchedule", "example.com/x:NoExecute", "k=:PreferNoSchedule"} {
		if _, err := ParseTaint(ok); err != nil {
			t.Errorf("ParseTaint(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"a=b", "a=b:noschedule", ":NoSchedule", "a=b c:NoSchedule"} {
		if _, err := ParseTaint(bad); err == nil {
			t.Errorf("ParseTaint(%q) accepted", bad)
		}
	}
	if _, err := ParseTaint("a=b:noschedule"); err == nil || !strings.Contains(err.Error(), "did you mean NoSchedule") {
		t.Errorf("no did-you-mean: %v", err)
	}
}

func TestLabels(t *testing.T) {
	long := strings.Repeat("a", 64)
	for _, c := range []struct {
		k, v string
		ok   bool
	}{
		{"example.com/disk", "ssd", true},
		{"disk", "", true},
		{"node.kubernetes.io/exclude-from-external-load-balancers", "true", true},
		{"topology.kubernetes.io/zone", "rack1", true},
		{"node-role.kubernetes.io/worker", "true", true},
		{"kubernetes.io/foo", "x", false},
		{"foo.k8s.io/bar", "x", false},
		{"example.com/" + long, "x", false},
		{"example.com/x", long, false},
		{"Example.com/x", "y", false},
		{"x", "-bad", false},
	} {
		err := CheckLabel(c.k, c.v)
		if (err == nil) != c.ok {
			t.Errorf("CheckLabel(%q, %q) = %v, want ok=%v", c.k, c.v, err, c.ok)
		}
	}
}

func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s.yaml")
	tok, err := NewToken()
	if err != nil || len(tok) != 64 {
		t.Fatalf("NewToken = %q, %v", tok, err)
	}
	if err := WriteSecrets(p, &Secrets{Token: tok}, false); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %o, want 0600", st.Mode().Perm())
	}
	if err := WriteSecrets(p, &Secrets{Token: tok}, false); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("overwrite without force: %v", err)
	}
	s, err := LoadSecrets(p)
	if err != nil || s.Token != tok {
		t.Fatalf("LoadSecrets = %v, %v", s, err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadSecrets(p)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+p) {
		t.Errorf("group-readable secrets accepted or no hint: %v", err)
	}
	bad := writeFile(t, "bad.yaml", "token: short\n", 0o600)
	_, err = LoadSecrets(bad)
	if err == nil || strings.Contains(err.Error(), "short") {
		t.Errorf("short token: %v (must fail without echoing the token)", err)
	}
}

func TestDecodeKeepsLeadingZero(t *testing.T) {
	var v struct {
		K map[string]any `yaml:"k"`
	}
	d := NewDoc("x.yaml")
	if err := d.Decode([]byte("k:\n  mode: 0644\n  n: 50\n  b: true\n  l: [a, 1]\n"), &v); err != nil || d.Err() != nil {
		t.Fatal(err, d.Err())
	}
	if v.K["mode"] != "0644" || v.K["n"] != 50 || v.K["b"] != true {
		t.Errorf("decoded %#v", v.K)
	}
}

func TestNetbootIdentity(t *testing.T) {
	head := "server: k1\nk3s:\n  version: v1.31.4+k3s1\nnodes:\n  - name: k5\n"
	// A Pi 3B's ROM sends no serial: a MAC alone names it.
	p := writeFile(t, "imgbake.yaml", head+"    netboot: {mac: \"b8:27:eb:11:22:33\"}\n", 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatalf("MAC-only netboot identity refused: %v", err)
	}
	if nb := c.Nodes[0].Netboot; nb == nil || nb.MAC != "b8:27:eb:11:22:33" || nb.Serial != "" {
		t.Errorf("netboot = %+v", c.Nodes[0].Netboot)
	}
	p = writeFile(t, "imgbake.yaml", head+"    netboot: {}\n", 0o644)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "imgbake.yaml:6: nodes[0].netboot: give the Pi's serial") {
		t.Errorf("empty netboot identity: got %v", err)
	}
}

func TestNetbootIdentityTyped(t *testing.T) {
	s, mac, err := (&Netboot{Serial: "1234ABCD", MAC: "DC:A6:32:01:36:C2"}).Identity()
	if err != nil || s != "1234abcd" || mac.String() != "dc:a6:32:01:36:c2" {
		t.Errorf("Identity = %q %v %v", s, mac, err)
	}
	if s, mac, err := (&Netboot{MAC: "dc:a6:32:01:36:c2"}).Identity(); err != nil || s != "" || mac == nil {
		t.Errorf("MAC only: %q %v %v", s, mac, err)
	}
	for _, nb := range []Netboot{{Serial: "xyz"}, {MAC: "dc:a6"}} {
		if _, _, err := nb.Identity(); err == nil {
			t.Errorf("%+v: no error", nb)
		}
	}
}

// TestBaseSHA256 reads base-sha256: (the sha256 of base: as its publisher
// lists it) and refuses a value that is not one, naming the line.
func TestBaseSHA256(t *testing.T) {
	const sum = "9E8F0F8C1C8A4D2D4B7A1F1E3E8E2D0C6B5A4938271605F4E3D2C1B0A9876543"
	src := "server: k1\nk3s: {version: v1.36.4+k3s1}\nbase: raspios.img.xz\nbase-sha256: " + sum + "\n"
	c, err := Load(writeFile(t, "imgbake.yaml", src, 0o644))
	if err != nil {
		t.Fatal(err)
	}
	if c.BaseSHA256 != strings.ToLower(sum) {
		t.Errorf("BaseSHA256 = %q", c.BaseSHA256)
	}
	for bad, want := range map[string]string{
		"base: a.img\nbase-sha256: 9e8f0f8c\n":           "imgbake.yaml:4: base-sha256: \"9e8f0f8c\" is not a sha256: expected the 64 hex digits the base's publisher lists",
		"base-sha256: " + sum + "\n":                     "imgbake.yaml:3: base-sha256: it checks base:, which is not set: add base: (the image file it is the sha256 of)",
		"base: a.img\nbase-sha256: sha256:" + sum + "\n": "not a sha256",
	} {
		_, err := Load(writeFile(t, "imgbake.yaml", "server: k1\nk3s: {version: v1.36.4+k3s1}\n"+bad, 0o644))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", bad, err, want)
		}
	}
}

// TestStaleSecretsTemp: the temporary copy of the secrets file (it holds
// the join token) that an imgbake killed while writing it left is removed
// the next time the secrets are read or written, and named so that it can
// be recognised.
func TestStaleSecretsTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "imgbake.secrets.yaml")
	tok, _ := NewToken()
	if err := WriteSecrets(p, &Secrets{Token: tok}, false); err != nil {
		t.Fatal(err)
	}
	// The name WriteFile gives its temporary file, with a pid that has
	// ended, and one of a running imgbake (removed below).
	stale, live := fixture.LeftTemps(t, p, []byte("token: "+tok+"\n"))
	write := func() {
		if err := os.WriteFile(stale, []byte("token: "+tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := LoadSecrets(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("LoadSecrets left a killed imgbake's copy of the secrets")
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("LoadSecrets removed a running imgbake's copy: %v", err)
	}
	os.Remove(live)
	write()
	if err := WriteSecrets(p, &Secrets{Token: tok}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("WriteSecrets left a killed imgbake's copy of the secrets")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("%s holds %d files, want the secrets file alone", dir, len(ents))
	}
}
