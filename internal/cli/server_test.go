package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/internal/fixture"
)

// TestBuildNetbootServer: a node with netboot-server: gets what it needs to
// run the cluster's network boot server with no network at its first boot:
// imgbake for its arch, the cluster file with its paths pointing at the
// copies beside it, the secrets (root only), the profiles, the base
// (compressed), the verified k3s release in the cache, and an enabled
// imgbake-netboot.service; nothing secret goes to stdout, stderr, the
// manifest or the FAT.
func TestBuildNetbootServer(t *testing.T) {
	fixture.RequireTools(t, "e2fsck", "debugfs", "fsck.vfat", "mtype", "zstd")
	base := fixture.Cached(t, fixture.RaspiOSBookwormArm64)
	k3sBin := crossELF(t, "arm64")
	srv := fakeRelease(t, map[string][]byte{"arm64": k3sBin})
	dir, cfg, token := clusterDir(t, base, srv.URL)
	env := map[string]string{"HOME": dir, "SOURCE_DATE_EPOCH": "1700000000"}
	src, _ := os.ReadFile(cfg)
	src = bytes.Replace(src, []byte("  - name: k1\n    profile: server\n"), []byte("  - name: k1\n    profile: server\n    netboot-server: {interface: end0, disk-size: 8G}\n"), 1)
	src = append([]byte("# Our lab cluster.\n"), src...)
	src = append(src, []byte("enroll: {mode: approve, profile: edge, name: \"edge-{n}\"}\n")...)
	os.WriteFile(cfg, src, 0o644)
	os.MkdirAll(filepath.Join(dir, "profiles", "files"), 0o755)
	os.WriteFile(filepath.Join(dir, "profiles", "edge.yaml"), []byte("role: agent\nfiles:\n  - {path: /etc/edge.txt, source: files/edge.txt}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "profiles", "files", "edge.txt"), []byte("edge\n"), 0o644)

	// This test binary is no imgbake for arm64: the build says where one goes.
	code, _, e := run(t, env, "build", "-c", cfg, "k1")
	if code == 0 || !strings.Contains(e, "imgbake-linux-arm64") || !strings.Contains(e, "--imgbake-binary") {
		t.Fatalf("no imgbake for arm64: exit %d: %s", code, e)
	}
	if code, _, e := run(t, env, "check", "-c", cfg, "k1"); code == 0 || !strings.Contains(e, "--imgbake-binary") {
		t.Errorf("check without imgbake for arm64: exit %d: %s", code, e)
	}
	armhf := filepath.Join(dir, "imgbake-armhf")
	os.WriteFile(armhf, crossELF(t, "armhf"), 0o755)
	if code, _, e := run(t, env, "build", "-c", cfg, "--imgbake-binary", armhf, "k1"); code == 0 || !strings.Contains(e, armhf) {
		t.Errorf("imgbake for armhf in an arm64 image: exit %d: %s", code, e)
	}
	exe := filepath.Join(dir, "imgbake-arm64")
	exeData := crossELF(t, "arm64")
	os.WriteFile(exe, exeData, 0o755)
	code, out, e := run(t, env, "build", "-c", cfg, "--imgbake-binary", exe, "k1")
	if code != 0 {
		t.Fatalf("build: exit %d\n%s", code, e)
	}
	for _, s := range []string{out, e} {
		if strings.Contains(s, token) {
			t.Fatal("the token was printed")
		}
	}
	secrets, _ := os.ReadFile(filepath.Join(dir, "imgbake.secrets.yaml"))
	img := filepath.Join(dir, "out", "k1.img")
	checkImage(t, img, "k1", token)
	manifest, _ := os.ReadFile(img + ".manifest.json")
	if bytes.Contains(manifest, []byte(token)) || bytes.Contains(manifest, []byte(sha256Hex(secrets))) {
		t.Error("the manifest holds the token or the secrets file's checksum")
	}
	root := extract(t, img, partitions(t, img)[1])
	mode := func(p, want string) {
		t.Helper()
		if st := debugfsStat(t, root, p); !strings.Contains(st, "Mode:  "+want) || !strings.Contains(st, "User:     0") {
			t.Errorf("%s: want mode %s, root:\n%s", p, want, st)
		}
	}
	const nd = "/var/lib/imgbake/netboot"
	mode("/usr/local/bin/imgbake", "0755")
	mode(nd, "0700")
	mode(nd+"/imgbake.secrets.yaml", "0600")
	mode(nd+"/imgbake.yaml", "0600")
	if got := debugfsCat(t, root, "/usr/local/bin/imgbake"); got != string(exeData) {
		t.Error("/usr/local/bin/imgbake is not the given binary")
	}
	if got := debugfsCat(t, root, nd+"/imgbake.secrets.yaml"); got != string(secrets) {
		t.Error("the secrets file differs")
	}
	if got := debugfsCat(t, root, nd+"/profiles/files/edge.txt"); got != "edge\n" {
		t.Errorf("profiles/files/edge.txt: %q", got)
	}
	k3sDir := nd + "/cache/k3s/" + testVersion + "/arm64/"
	if got := debugfsCat(t, root, k3sDir+"k3s-arm64"); got != string(k3sBin) {
		t.Error("the cached k3s differs from the release's")
	}
	if got := debugfsCat(t, root, k3sDir+"sha256sum-arm64.txt"); !strings.HasSuffix(got, "  k3s-arm64\n") {
		t.Errorf("the cached k3s checksums: %q", got)
	}

	// The node's cluster file loads, and its paths are the copies beside it.
	node := t.TempDir()
	nodeCfg := filepath.Join(node, "imgbake.yaml")
	os.WriteFile(nodeCfg, []byte(debugfsCat(t, root, nd+"/imgbake.yaml")), 0o600)
	c, err := config.Load(nodeCfg)
	if err != nil {
		t.Fatalf("the node's cluster file: %v", err)
	}
	baseName := filepath.Base(base) + ".zst"
	if c.Base != "base/"+baseName || c.CacheDir != "cache" || c.SecretsFile != "imgbake.secrets.yaml" || c.ProfilesDir != "profiles" || c.OutputDir != "out" || c.Enroll == nil || c.K3s.Version != testVersion || c.BaseSHA256 == "" {
		t.Errorf("the node's cluster file: base %q cache %q secrets %q profiles %q out %q enroll %v k3s %q", c.Base, c.CacheDir, c.SecretsFile, c.ProfilesDir, c.OutputDir, c.Enroll, c.K3s.Version)
	}
	if raw, _ := os.ReadFile(nodeCfg); !bytes.Contains(raw, []byte("# Our lab cluster.")) {
		t.Errorf("the node's cluster file lost the user's comment:\n%s", raw)
	}
	// The base, compressed, decompresses to the base.
	zst := filepath.Join(node, baseName)
	tool(t, "debugfs", "-R", "dump "+nd+"/base/"+baseName+" "+zst, root)
	raw := filepath.Join(node, "base.img")
	tool(t, "zstd", "-q", "-d", zst, "-o", raw)
	if err := exec.Command("cmp", raw, base).Run(); err != nil {
		t.Errorf("the base on the node does not decompress to the base: %v", err)
	}
	if zb, _ := os.ReadFile(zst); sha256Hex(zb) != c.BaseSHA256 {
		t.Errorf("the node's base-sha256 %s is not its base's", c.BaseSHA256)
	}

	unit := debugfsCat(t, root, "/etc/systemd/system/imgbake-netboot.service")
	for _, want := range []string{"ExecStart=/usr/local/bin/imgbake netboot --config " + nd + "/imgbake.yaml --interface end0 --wait 2m --disk-size 8G\n", "After=network-online.target", "Restart=always", "ExecReload=/bin/kill -HUP $MAINPID"} {
		if !strings.Contains(unit, want) {
			t.Errorf("imgbake-netboot.service lacks %q:\n%s", want, unit)
		}
	}
	if st := debugfsStat(t, root, "/etc/systemd/system/multi-user.target.wants/imgbake-netboot.service"); !strings.Contains(st, "Type: symlink") {
		t.Errorf("imgbake-netboot.service is not enabled:\n%s", st)
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		p := filepath.Join(t.TempDir(), "imgbake-netboot.service")
		os.WriteFile(p, []byte(strings.ReplaceAll(unit, "/usr/local/bin/imgbake", "/bin/true")), 0o644)
		if out, err := exec.Command("systemd-analyze", "verify", p).CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}
	// An ordinary node carries none of it.
	if code, _, e := run(t, env, "build", "-c", cfg, "k5"); code != 0 {
		t.Fatalf("build k5: %s", e)
	}
	k5 := extract(t, filepath.Join(dir, "out", "k5.img"), partitions(t, filepath.Join(dir, "out", "k5.img"))[1])
	if out := tool(t, "debugfs", "-R", "stat /usr/local/bin/imgbake", k5); strings.Contains(out, "Inode:") {
		t.Error("k5 got imgbake")
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
