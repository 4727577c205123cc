package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
)

// netbootCluster writes a cluster file with a network-booted k5, a k6
// without netboot: and k5's image in out/.
func netbootCluster(t *testing.T) (dir, cfg string) {
	t.Helper()
	dir = t.TempDir()
	cfg = filepath.Join(dir, "imgbake.yaml")
	src := `server: 192.168.1.10
k3s: {version: v1.31.4+k3s1}
nodes:
  - name: k5
    profile: worker
    netboot: {serial: 1234ABCD, mac: "dc:a6:32:01:36:c2"}
  - name: k6
    profile: worker
`
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "out"), 0o755)
	if err := os.Rename(fixture.Build(t, fixture.RaspiOSBookwormArm64), filepath.Join(dir, "out", "k5.img")); err != nil {
		t.Fatal(err)
	}
	return dir, cfg
}

func TestNetbootReset(t *testing.T) {
	fixture.RequireTools(t)
	dir, cfg := netbootCluster(t)
	disk := filepath.Join(dir, "netboot-state", "k5", "disk.img")
	code, out, errOut := run(t, nil, "netboot", "reset", "k5", "--config", cfg, "--disk-size", "1G")
	if code != 0 {
		t.Fatalf("reset: exit %d: %s", code, errOut)
	}
	if fi, err := os.Stat(disk); err != nil || fi.Size() != 1<<30 {
		t.Fatalf("disk: %v %v", fi, err)
	}
	if !strings.Contains(out, "k5: new disk "+disk+" (1.0 GiB) from k5.img") {
		t.Errorf("stdout %q", out)
	}
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"netboot", "reset", "k6"}, 1, "k6 has no netboot: entry"},
		{[]string{"netboot", "reset", "k7"}, 1, "no node k7"},
		{[]string{"netboot", "reset"}, 2, "name the node(s)"},
		{[]string{"netboot", "reset", "k5", "--disk-size", "12x"}, 2, "--disk-size"},
		{[]string{"netboot", "reset", "k5", "--disk-size", "100M"}, 2, "too small"},
		{[]string{"netboot"}, 2, "--interface eth0"},
		{[]string{"netboot", "--interface", "no-such-if0"}, 2, "ip -br addr"},
		{[]string{"netboot", "--interface", "lo", "--address", "10.9.9.9"}, 2, "not an address of lo"},
	} {
		code, _, e := run(t, nil, append(c.args, "--config", cfg)...)
		if code != c.code || !strings.Contains(e, c.msg) {
			t.Errorf("%v: exit %d %q; want %d and %q", c.args, code, e, c.code, c.msg)
		}
	}
	os.Remove(filepath.Join(dir, "out", "k5.img"))
	if code, _, e := run(t, nil, "netboot", "reset", "k5", "--config", cfg); code != 1 || !strings.Contains(e, "imgbake build k5") {
		t.Errorf("reset without an image: exit %d %q", code, e)
	}
	// The old disk survives a failed reset.
	if _, err := os.Stat(disk); err != nil {
		t.Errorf("failed reset removed the disk: %v", err)
	}
	// A cluster file without netboot nodes.
	os.WriteFile(cfg, []byte("server: 192.168.1.10\nk3s: {version: v1.31.4+k3s1}\nnodes:\n  - name: k6\n    profile: worker\n"), 0o644)
	if code, _, e := run(t, nil, "netboot", "reset", "k6", "--config", cfg); code != 1 || !strings.Contains(e, "netboot: {serial: 1234abcd}") {
		t.Errorf("no netboot nodes: exit %d %q", code, e)
	}
}
