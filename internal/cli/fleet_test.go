package cli

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/netboot/enroll"
)

// TestNetbootApprove: a Pi the server saw waits in `netboot pending`;
// `netboot approve` enrols it under --name, after which it is an ordinary
// node of the cluster, and no longer pending.
func TestNetbootApprove(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "imgbake.yaml")
	os.WriteFile(cfg, []byte("server: 192.168.1.10\nk3s: {version: v1.31.4+k3s1}\nnodes:\n  - {name: k1, profile: server}\n"+
		"enroll: {mode: approve, profile: worker, models: [pi4]}\n"), 0o644)
	state := filepath.Join(dir, "netboot-state")
	os.MkdirAll(state, 0o700)
	// What the server records when two unknown Pis ask to boot.
	e := &enroll.Enroller{Policy: &enroll.Policy{Mode: enroll.ModeApprove, Profile: "worker", Name: "worker-{n}", Models: []string{"pi4"}},
		Store: &enroll.Store{Path: filepath.Join(dir, enroll.DefaultFile)}, PendingPath: filepath.Join(state, enroll.PendingFile)}
	mac1, _ := net.ParseMAC("dc:a6:32:00:00:01")
	mac2, _ := net.ParseMAC("d8:3a:dd:00:00:02")
	e.Lookup(enroll.Machine{MAC: mac1, Serial: "1234abcd", Revision: 0xc03111}, netip.MustParseAddr("192.168.1.35"))
	e.Lookup(enroll.Machine{MAC: mac2, Serial: "5678abcd", Revision: 0xc04170}, netip.Addr{})

	code, out, errOut := run(t, nil, "netboot", "pending", "--config", cfg)
	if code != 0 || !strings.Contains(out, "1234abcd") || !strings.Contains(out, "192.168.1.35") || !strings.Contains(out, "imgbake netboot approve 1234abcd") ||
		!strings.Contains(out, "refused: model pi5 is not in enroll.models") {
		t.Fatalf("pending: %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := run(t, nil, "netboot", "approve", "5678abcd", "--config", cfg); code == 0 || !strings.Contains(errOut, "refused") {
		t.Errorf("approving a refused Pi: %d %s", code, errOut)
	}
	if code, _, errOut := run(t, nil, "netboot", "approve", "1234abcd", "--name", "k1", "--config", cfg); code == 0 || !strings.Contains(errOut, "k1") {
		t.Errorf("approving under a listed node's name: %d %s", code, errOut)
	}
	code, out, errOut = run(t, nil, "netboot", "approve", "1234abcd", "--name", "k7", "--config", cfg)
	if code != 0 || !strings.Contains(out, "k7: enrolled (serial 1234abcd, mac dc:a6:32:00:00:01, model pi4, profile worker)") {
		t.Fatalf("approve: %d %s %s", code, out, errOut)
	}
	// k7 is an ordinary node now.
	a := &App{Stderr: os.Stderr}
	c, err := a.loadCluster(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n, _, ok := c.Node("k7"); !ok || n.Profile != "worker" || n.Netboot == nil || n.Netboot.Serial != "1234abcd" || n.Model != "pi4" {
		t.Errorf("k7 in the cluster: %+v", n)
	}
	jobs, err := a.jobs(c, &buildOptions{}, []string{"k7"})
	if err != nil || jobs[0].profile.Name != "worker" {
		t.Errorf("build k7: %v", err)
	}
	code, out, _ = run(t, nil, "netboot", "pending", "--config", cfg)
	if code != 0 || strings.Contains(out, "1234abcd") {
		t.Errorf("pending after approval:\n%s", out)
	}
	code, out, errOut = run(t, nil, "netboot", "status", "--json", "--config", cfg)
	if code != 0 {
		t.Fatalf("status: %s", errOut)
	}
	var rows []nodeRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if len(rows) != 2 || rows[0].Name != "k7" || !rows[0].Enrolled || rows[0].State != "no image" || rows[1].State != "refused" {
		t.Errorf("status rows %+v", rows)
	}
}

// TestPrintUnit: the unit `netboot --print-unit` prints passes
// systemd-analyze verify.
func TestPrintUnit(t *testing.T) {
	code, out, errOut := run(t, nil, "netboot", "--print-unit", "--interface", "eth1", "--state-dir", "/var/lib/imgbake", "--config", "/etc/imgbake/imgbake.yaml")
	if code != 0 {
		t.Fatalf("%d %s", code, errOut)
	}
	for _, want := range []string{"After=network-online.target", "Restart=always", "ExecReload=/bin/kill -HUP $MAINPID",
		" netboot --config /etc/imgbake/imgbake.yaml --interface eth1 --wait 2m --state-dir /var/lib/imgbake\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("unit lacks %q:\n%s", want, out)
		}
	}
	verifyUnit(t, "imgbake-netboot.service", out)
}

// verifyUnit runs systemd-analyze verify on a unit.
func verifyUnit(t *testing.T, name, unit string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd)")
	}
	p := filepath.Join(t.TempDir(), name)
	os.WriteFile(p, []byte(unit), 0o644)
	cmd := exec.CommandContext(context.Background(), "systemd-analyze", "verify", "--man=no", p)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), name) {
		t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
	}
}
