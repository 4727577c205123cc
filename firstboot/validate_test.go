package firstboot

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/image/plan"
)

// planFiles returns every file a plan writes, by "part:path": entries, and
// edits run on their sample (or on nothing) as the image layer would.
func planFiles(t *testing.T, p *plan.Plan) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, e := range p.Entries {
		if e.Kind == plan.File && e.Source == "" {
			files[e.Part.String()+":"+e.Path] = e.Data
		}
	}
	for _, e := range p.Edits {
		key := e.Part.String() + ":" + e.Path
		var old []byte
		if d, ok := files[key]; ok {
			old = d
		} else if s, ok := samples[key]; ok {
			old = []byte(s)
		}
		out, err := e.Func(old)
		if err != nil {
			t.Fatalf("edit %s: %v", key, err)
		}
		files[key] = out
	}
	return files
}

func needTool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed (apt-get install %s): cannot check these files with it", name, pkg)
	}
}

// TestFilesParse reads every network, Wi-Fi and cloud-init file the plans
// write with the real programs that read them, offline: cloud-init's schema
// check for user-data, netplan generate for netplan files and the
// network-config seed (netplan's format), nmcli --offline for
// NetworkManager keyfiles, and wpa_supplicant for its configuration.
func TestFilesParse(t *testing.T) {
	all := cases(t)
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		p, err := Plan(all[name])
		if err != nil {
			t.Fatal(err)
		}
		files := planFiles(t, p)
		var netplanFiles []string
		for key := range files {
			part, fpath, _ := strings.Cut(key, ":")
			switch {
			case part == "boot" && fpath == "/user-data":
				t.Run(name+"/cloud-init-schema"+fpath, func(t *testing.T) { cloudInitSchema(t, files[key]) })
				// Also on a FAT without user-data.
				for _, e := range p.Edits {
					if e.Part == plan.Boot && e.Path == "/user-data" {
						out, err := e.Func(nil)
						if err != nil {
							t.Fatal(err)
						}
						t.Run(name+"/cloud-init-schema/new-user-data", func(t *testing.T) { cloudInitSchema(t, out) })
					}
				}
			case part == "boot" && fpath == "/network-config", part == "root" && strings.HasPrefix(fpath, "/etc/netplan/"):
				netplanFiles = append(netplanFiles, key)
			case strings.HasSuffix(fpath, ".nmconnection"):
				t.Run(name+"/nmcli"+fpath, func(t *testing.T) { nmcliOffline(t, files[key]) })
			case strings.HasPrefix(fpath, "/etc/wpa_supplicant/"):
				t.Run(name+"/wpa_supplicant"+fpath, func(t *testing.T) { wpaSupplicant(t, files[key]) })
			}
		}
		if len(netplanFiles) > 0 {
			sort.Strings(netplanFiles)
			t.Run(name+"/netplan-generate", func(t *testing.T) { netplanGenerate(t, files, netplanFiles) })
		}
	}
}

func cloudInitSchema(t *testing.T, data []byte) {
	needTool(t, "cloud-init", "cloud-init")
	f := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("cloud-init", "schema", "-c", f).CombinedOutput()
	if err != nil || strings.Contains(string(out), "rror") {
		t.Errorf("cloud-init schema -c: %v\n%s\nuser-data:\n%s", err, out, data)
	}
}

func nmcliOffline(t *testing.T, data []byte) {
	needTool(t, "nmcli", "network-manager")
	// --offline reads the keyfile from stdin, applies the change and
	// writes it back: it fails on a property NetworkManager rejects.
	cmd := exec.Command("nmcli", "--offline", "connection", "modify", "connection.autoconnect", "yes")
	cmd.Stdin = strings.NewReader(string(data))
	out, err := cmd.CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "offline") && strings.Contains(string(out), "nknown") {
			t.Skipf("this nmcli has no --offline mode: %s", out)
		}
		t.Errorf("nmcli --offline: %v\n%s\nkeyfile:\n%s", err, out, data)
	}
	if !strings.Contains(string(out), "type=") {
		t.Errorf("nmcli --offline wrote no connection:\n%s", out)
	}
}

func wpaSupplicant(t *testing.T, data []byte) {
	needTool(t, "wpa_supplicant", "wpasupplicant")
	f := filepath.Join(t.TempDir(), "wpa_supplicant.conf")
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// Driver "none" and an interface that does not exist: it reads the
	// configuration, then gives up on the interface.
	out, _ := exec.Command("timeout", "10", "wpa_supplicant", "-c", f, "-i", "imgbake-none0", "-D", "none", "-d").CombinedOutput()
	s := string(out)
	if strings.Contains(s, "Failed to read or parse configuration") || strings.Contains(s, "failed to parse") || !strings.Contains(s, "id=0 ssid=") {
		t.Errorf("wpa_supplicant does not read it:\n%s\nconfiguration:\n%s", s, data)
	}
}

func netplanGenerate(t *testing.T, files map[string][]byte, keys []string) {
	needTool(t, "netplan", "netplan.io")
	root := t.TempDir()
	for _, key := range keys {
		_, p, _ := strings.Cut(key, ":")
		if strings.HasPrefix(key, "boot:") {
			p = "/etc/netplan/50-cloud-init.yaml" // where cloud-init renders the seed
		}
		full := filepath.Join(root, p)
		if err := os.MkdirAll(path.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, files[key], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("netplan", "generate", "--root-dir", root).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("netplan generate: %v\n%s", err, out)
	}
	if gen, _ := filepath.Glob(filepath.Join(root, "run/*/*")); len(gen) == 0 {
		t.Errorf("netplan generate wrote nothing from %v", keys)
	}
}

// TestWPAPSK: the PSK written for wpa_supplicant is the one wpa_passphrase
// derives.
func TestWPAPSK(t *testing.T) {
	needTool(t, "wpa_passphrase", "wpasupplicant")
	for _, c := range [][2]string{{"home net", testPass}, {"x", "12345678"}} {
		out, err := exec.Command("wpa_passphrase", c[0], c[1]).Output()
		if err != nil {
			t.Fatal(err)
		}
		got, err := wpaPSK(c[1], c[0])
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "\tpsk="+got+"\n") {
			t.Errorf("wpaPSK(%q, %q) = %s; wpa_passphrase says\n%s", c[1], c[0], got, out)
		}
	}
}
