package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// k3sVersion is the release the cluster file pins.
const k3sVersion = "v1.36.4+k3s1"

// serverAddr is the cluster's server in the baked images; nothing listens
// there (the stand-in k3s does not connect), it only has to reach the config.
const serverAddr = "10.0.2.15"

// e2eUser, e2eKey and e2ePassword are the login user every baked node gets
// (a password given to init, a key in the cluster file), with e2eTimezone.
const (
	e2eUser     = "alice"
	e2eKey      = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIPWfyXFyYg9mP6Q6BK8MSsnvwlIJlz94NtdCTQ4Gl+G e2e@imgbake"
	e2ePassword = "e2e password"
	e2eTimezone = "Europe/Berlin"
)

// clusterFile lists the nodes the boot tests bake: a server and a worker,
// each with a label and a taint, and the login user and timezone.
const clusterFile = `server: ` + serverAddr + `
k3s:
  version: ` + k3sVersion + `
%s
base: %s
user:
  name: ` + e2eUser + `
  authorized-keys:
    - ` + e2eKey + `
timezone: ` + e2eTimezone + `
nodes:
  - name: k1
    profile: server
    model: pi4
    labels:
      e2e.imgbake.dev/role: control
    taints: ["e2e.imgbake.dev/control=true:NoSchedule"]
  - name: k5
    profile: worker
    model: pi4
    labels:
      e2e.imgbake.dev/disk: ssd
    taints: ["e2e.imgbake.dev/dedicated=db:NoSchedule"]
`

// nodeExpect is what each baked node must report.
func nodeExpect(node string) expect {
	if node == "k1" {
		return expect{Role: "server", Hostname: "k1", Config: []string{
			"node-name: k1", "- e2e.imgbake.dev/role=control",
			"- e2e.imgbake.dev/control=true:NoSchedule", "- " + serverAddr,
		}}
	}
	return expect{Role: "agent", Hostname: "k5", Config: []string{
		"node-name: k5", "server: https://" + serverAddr + ":6443",
		"- e2e.imgbake.dev/disk=ssd", "- e2e.imgbake.dev/dedicated=db:NoSchedule",
	}}
}

// imgbakeBinary builds ./cmd/imgbake for this machine.
func (e *env) imgbakeBinary(ctx context.Context) (string, error) {
	return e.imgbake.get(func() (string, error) {
		if !fileExists(filepath.Join(e.repo, "cmd", "imgbake")) {
			return "", fmt.Errorf("cmd/imgbake does not exist yet")
		}
		out := filepath.Join(e.dir, "imgbake")
		cmd := exec.CommandContext(ctx, goTool(), "build", "-o", out, "./cmd/imgbake")
		cmd.Dir = e.repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building imgbake: %w\n%s", err, b)
		}
		return out, nil
	})
}

// baked holds the images imgbake built for one architecture.
type baked struct {
	dir   string // out/<node>.img
	token string // the join token of imgbake.secrets.yaml
	// passwordHash is the login user's, from imgbake.secrets.yaml.
	passwordHash string
}

// bake runs `imgbake init` and `imgbake build --all` on the base image of
// arch, as a user would. The stand-in k3s comes as --k3s-binary for arm64,
// and for armhf from a k3s release mirror on loopback (k3s-armhf and
// sha256sum-arm.txt, as on GitHub), so that both ways into the image boot.
func (e *env) bake(ctx context.Context, t *testing.T, arch string) (baked, error) {
	dir, err := e.baked[arch].get(func() (string, error) {
		bin, err := e.imgbakeBinary(ctx)
		if err != nil {
			return "", err
		}
		base, err := e.baseImage(ctx, t, arch)
		if err != nil {
			return "", err
		}
		k3s, err := e.standinBinary(ctx, arch)
		if err != nil {
			return "", err
		}
		dir := filepath.Join(e.dir, "cluster-"+arch)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		run := func(args ...string) error {
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Dir = dir
			cmd.Stdin = strings.NewReader(e2ePassword + "\n")
			b, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("imgbake %s: %w\n%s", strings.Join(args, " "), err, b)
			}
			return nil
		}
		if err := run("init", "--server", serverAddr, "--base", base, "--user", e2eUser, "--password"); err != nil {
			return "", err
		}
		args := []string{"build", "--all", "--cache-dir", filepath.Join(dir, "cache")}
		mirror := ""
		if arch == "arm64" {
			args = append(args, "--k3s-binary", k3s)
			// The arm64 nodes start from a base that boots cgroup v1, as
			// Buster and HypriotOS do: k3s 1.36 needs cgroup v2, so the
			// build must switch them to the unified hierarchy.
			if base, err = cgroupV1Base(ctx, base, filepath.Join(dir, "base-cgroupv1.img")); err != nil {
				return "", err
			}
		} else {
			srv, err := releaseMirror(arch, k3s)
			if err != nil {
				return "", err
			}
			defer srv.Close()
			mirror = "  release-url: " + srv.URL
		}
		if err := os.WriteFile(filepath.Join(dir, "imgbake.yaml"), []byte(fmt.Sprintf(clusterFile, mirror, base)), 0o644); err != nil {
			return "", err
		}
		t0 := time.Now()
		if err := run(args...); err != nil {
			return "", err
		}
		t.Logf("imgbake build --all (%s) took %s", arch, elapsedSince(t0))
		return dir, nil
	})
	if err != nil {
		return baked{}, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "imgbake.secrets.yaml"))
	if err != nil {
		return baked{}, err
	}
	var s struct {
		Token        string `yaml:"token"`
		PasswordHash string `yaml:"password-hash"`
	}
	if err := yaml.Unmarshal(b, &s); err != nil || s.Token == "" || s.PasswordHash == "" {
		return baked{}, fmt.Errorf("reading the join token and password hash of imgbake.secrets.yaml: %v", err)
	}
	return baked{dir: filepath.Join(dir, "out"), token: s.Token, passwordHash: s.PasswordHash}, nil
}

// releaseMirror serves binary as k3s release k3sVersion on loopback, laid out
// like https://github.com/k3s-io/k3s/releases/download/<tag>/<asset>.
func releaseMirror(arch, binary string) (*httptest.Server, error) {
	asset, sums := "k3s-arm64", "sha256sum-arm64.txt"
	if arch == "armhf" {
		asset, sums = "k3s-armhf", "sha256sum-arm.txt"
	}
	b, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	files := map[string][]byte{
		"/" + k3sVersion + "/" + asset: b,
		"/" + k3sVersion + "/" + sums:  []byte(hex.EncodeToString(sum[:]) + "  " + asset + "\n"),
	}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, path.Base(r.URL.Path), time.Time{}, bytes.NewReader(data))
	})), nil
}

// checkFirstboot checks what the stand-in saw of imgbake-firstboot.service:
// on the first boot it ran (condition true, main process started, success)
// and wrote its stamp; on later boots its condition was false.
func checkFirstboot(t *testing.T, rec map[string]string, first bool) {
	t.Helper()
	unit := map[string]string{}
	for _, l := range strings.Split(rec["firstboot_unit"], "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			unit[k] = v
		}
	}
	if unit["LoadState"] != "loaded" {
		t.Fatalf("imgbake-firstboot.service is not loaded: %q", rec["firstboot_unit"])
	}
	ran := unit["ConditionResult"] == "yes" && unit["ExecMainStartTimestampMonotonic"] != "0"
	if first && (!ran || unit["Result"] != "success") {
		t.Errorf("first boot: imgbake-firstboot.service did not run successfully: %q", rec["firstboot_unit"])
	}
	if !first && (ran || unit["ConditionResult"] != "no") {
		t.Errorf("later boot: imgbake-firstboot.service ran again: %q", rec["firstboot_unit"])
	}
	if !strings.HasPrefix(rec["firstboot_stamp"], "present") {
		t.Errorf("first-boot stamp /var/lib/imgbake/firstboot.done: %q", rec["firstboot_stamp"])
	}
}

// checkToken checks that the node has the cluster's join token.
func checkToken(t *testing.T, rec map[string]string, token string) {
	t.Helper()
	if !strings.Contains(rec["config"], "token: "+token) && !strings.Contains(rec["config"], `token: "`+token+`"`) {
		t.Errorf("config.yaml does not hold the join token of imgbake.secrets.yaml")
	}
}

// countLines counts console lines of a finished VM that contain s.
func countLines(t *testing.T, v *vm, s string) int {
	t.Helper()
	b, err := os.ReadFile(v.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), s)
}

// testBakedNode boots a baked node twice on one disk. The first boot must
// start the node's k3s role with its config and run the first-boot unit; the
// second must not run it again. With dirty, QEMU is killed (SIGKILL: no
// sync, no unmount, like pulling the plug) once the stand-in has fsynced its
// marker, and the second boot must still find the marker and come up. Every
// run ends with a clean poweroff (power button, systemd-logind) and
// `e2fsck -fn` of the root partition: after a dirty first boot that proves
// the kernel's journal replay on the second boot left a consistent file
// system. (e2fsck -n on the killed image itself would only report the
// unreplayed journal, which is not an error.)
func (e *env) testBakedNode(t *testing.T, arch, node string, dirty bool) {
	ctx := testContext(t)
	b, err := e.bake(ctx, t, arch)
	if err != nil {
		t.Fatal(err)
	}
	disk := diskCopy(t, filepath.Join(b.dir, node+".img"), node+".img")
	x := nodeExpect(node)
	release := e.slot(ctx, t)
	defer release()

	v, rec, spec := e.boot(ctx, t, node+"-boot1", arch, disk)
	checkNode(t, rec, spec, x)
	checkToken(t, rec, b.token)
	for _, flag := range []string{"cgroup_memory=1", "cgroup_enable=memory", "systemd.unified_cgroup_hierarchy=1"} {
		if !hasWord(rec["cmdline"], flag) {
			t.Errorf("running kernel's command line %q lacks %s", rec["cmdline"], flag)
		}
	}
	// The base booted cgroup v1; cgroup.controllers at the top of
	// /sys/fs/cgroup exists only when cgroup2 is mounted there.
	if hasWord(rec["cmdline"], "systemd.unified_cgroup_hierarchy=0") || rec["cgroup_controllers"] == "" {
		t.Errorf("cgroup2 is not mounted at /sys/fs/cgroup (controllers %q, cmdline %q)", rec["cgroup_controllers"], rec["cmdline"])
	}
	checkFirstboot(t, rec, true)
	checkLogin(ctx, t, v, rec, b)
	if rec["marker_prev"] != "0" {
		t.Errorf("boot 1: marker before = %q, want 0", rec["marker_prev"])
	}
	if x.Role == "server" && rec["notify"] != "READY=1 sent" {
		t.Errorf("server: %q, want READY=1 sent (k3s.service must be Type=notify)", rec["notify"])
	}
	if dirty {
		v.kill()
		if err := v.waitExit(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: killed QEMU after the marker was fsynced", node)
		// The cut must have caught the root file system mounted, or the
		// second boot proves nothing about journal replay.
		if needs, err := rootNeedsRecovery(ctx, disk, t.TempDir()); err != nil {
			t.Fatal(err)
		} else if !needs {
			t.Fatal("after the power cut the root file system is marked clean (no needs_recovery): it was not mounted read-write")
		}
	} else {
		powerOffClean(ctx, t, v, disk)
	}
	if n := countLines(t, v, "imgbake: first-boot setup done"); n != 1 {
		t.Errorf("boot 1: the first-boot script reported done %d times on the console, want 1", n)
	}
	stamp := rec["firstboot_stamp"]

	v, rec, spec = e.boot(ctx, t, node+"-boot2", arch, disk)
	checkNode(t, rec, spec, x)
	checkFirstboot(t, rec, false)
	if rec["firstboot_stamp"] != stamp {
		t.Errorf("boot 2: first-boot stamp %q, boot 1 had %q", rec["firstboot_stamp"], stamp)
	}
	if rec["marker_prev"] != "1" {
		t.Errorf("boot 2: marker written and fsynced by boot 1 reads %q, want 1", rec["marker_prev"])
	}
	powerOffClean(ctx, t, v, disk)
	if n := countLines(t, v, "imgbake: first-boot setup done"); n != 0 {
		t.Errorf("boot 2: the first-boot script ran again (%d times)", n)
	}
}

// testBakedOnce boots a baked node once: role, config, first boot, a clean
// poweroff and a clean file system.
func (e *env) testBakedOnce(t *testing.T, arch, node string) {
	ctx := testContext(t)
	b, err := e.bake(ctx, t, arch)
	if err != nil {
		t.Fatal(err)
	}
	disk := diskCopy(t, filepath.Join(b.dir, node+".img"), node+".img")
	defer e.slot(ctx, t)()
	v, rec, spec := e.boot(ctx, t, node+"-"+arch, arch, disk)
	checkNode(t, rec, spec, nodeExpect(node))
	checkToken(t, rec, b.token)
	checkFirstboot(t, rec, true)
	checkLogin(ctx, t, v, rec, b)
	powerOffClean(ctx, t, v, disk)
}

// checkLogin checks the first-boot settings of the cluster file: the boot
// reached multi-user.target (the userconf-pi stand-in of the base did not
// wait for a keyboard), the login user exists with the password given to
// init, its key and sudo, and the timezone is set.
func checkLogin(ctx context.Context, t *testing.T, v *vm, rec map[string]string, b baked) {
	t.Helper()
	mctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
	defer cancel()
	mu, err := v.record(mctx, "multi_user")
	if err != nil {
		t.Error(err)
	} else if !strings.HasPrefix(mu, "active ") || !strings.Contains(mu, "UnitFileState=disabled") {
		t.Errorf("multi-user.target: %q, want it active and the first-boot wizard (userconfig.service) disabled", mu)
	}
	var acct string
	for _, l := range strings.Split(rec["accounts"], "\n") {
		if strings.HasPrefix(l, e2eUser+" ") {
			acct = l
		}
	}
	f := map[string]string{}
	for _, kv := range strings.Fields(acct) {
		if k, val, ok := strings.Cut(kv, "="); ok {
			f[k] = val
		}
	}
	sum := sha256.Sum256([]byte(b.passwordHash))
	switch {
	case acct == "":
		t.Errorf("no account %s; login accounts: %q", e2eUser, rec["accounts"])
	case f["home"] != "/home/"+e2eUser || f["shell"] != "/bin/bash":
		t.Errorf("account %s: %s", e2eUser, acct)
	case f["shadow_sha256"] != hex.EncodeToString(sum[:]):
		t.Errorf("account %s: /etc/shadow does not hold the password hash of imgbake.secrets.yaml", e2eUser)
	case !strings.Contains(","+f["groups"]+",", ",sudo,"):
		t.Errorf("account %s is not in group sudo: %s", e2eUser, acct)
	case f["keys_mode"] != "0600/"+f["uid"]+":"+f["gid"]:
		t.Errorf("account %s: authorized_keys mode and owner %q, want 0600/%s:%s", e2eUser, f["keys_mode"], f["uid"], f["gid"])
	case !strings.Contains(acct, e2eKey):
		t.Errorf("account %s: authorized_keys lacks the key of the cluster file: %s", e2eUser, acct)
	}
	tz := strings.Fields(rec["timezone"])
	if len(tz) != 3 || tz[0] != "/usr/share/zoneinfo/"+e2eTimezone || tz[1] != e2eTimezone || (tz[2] != "CET" && tz[2] != "CEST") {
		t.Errorf("timezone: %q, want /etc/localtime -> /usr/share/zoneinfo/%s, /etc/timezone %s, zone CET or CEST", rec["timezone"], e2eTimezone, e2eTimezone)
	}
}

// cgroupV1Base copies base (a mkbase.sh image: its FAT partition starts at
// 4 MiB) to out with systemd.unified_cgroup_hierarchy=0 on its command line.
func cgroupV1Base(ctx context.Context, base, out string) (string, error) {
	if b, err := exec.CommandContext(ctx, "cp", "--sparse=always", "--reflink=auto", base, out).CombinedOutput(); err != nil {
		return "", fmt.Errorf("copying the base: %w\n%s", err, b)
	}
	img := out + "@@4194304"
	cmdline, err := exec.CommandContext(ctx, "mtype", "-i", img, "::cmdline.txt").Output()
	if err != nil {
		return "", fmt.Errorf("reading cmdline.txt: %w", err)
	}
	f := filepath.Join(filepath.Dir(out), "cmdline-v1.txt")
	line := strings.TrimSpace(string(cmdline)) + " systemd.unified_cgroup_hierarchy=0\n"
	if err := os.WriteFile(f, []byte(line), 0o644); err != nil {
		return "", err
	}
	if b, err := exec.CommandContext(ctx, "mcopy", "-o", "-i", img, f, "::cmdline.txt").CombinedOutput(); err != nil {
		return "", fmt.Errorf("writing cmdline.txt: %w\n%s", err, b)
	}
	return out, nil
}
