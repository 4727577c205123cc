package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// bootTimeout bounds one boot until the stand-in k3s is ready. A boot takes
// about 30 s under TCG on an idle machine; several VMs share the CPUs.
const bootTimeout = 10 * time.Minute

// TestBoot boots images under QEMU (TCG, the "virt" board) from their own
// boot partition: the kernel and initramfs config.txt names, the command line
// of cmdline.txt. The stand-in k3s (e2e/standin-k3s) reports on the serial
// console how the node came up.
func TestBoot(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-aarch64"); err != nil {
		t.Skip("qemu-system-aarch64 not found: the QEMU boot tests need qemu-system-arm (apt-get install qemu-system-arm); run them with `make e2e`")
	}
	requireTools(t)
	e := newEnv(t)
	for _, arch := range arches() {
		t.Run("hand-installed/"+arch, func(t *testing.T) {
			t.Parallel()
			e.testHandInstalled(t, arch)
		})
	}
	t.Run("baked/arm64/server-reboot", func(t *testing.T) {
		t.Parallel()
		e.testBakedNode(t, "arm64", "k1", false)
	})
	t.Run("baked/arm64/worker-power-cut", func(t *testing.T) {
		t.Parallel()
		e.testBakedNode(t, "arm64", "k5", true)
	})
	t.Run("baked/armhf/worker", func(t *testing.T) {
		t.Parallel()
		e.testBakedOnce(t, "armhf", "k5")
	})
}

// testContext ends a minute before the test binary's deadline, so that
// QEMU is killed and the console shown while there is time to report.
func testContext(t *testing.T) context.Context {
	ctx := context.Background()
	if d, ok := t.Deadline(); ok {
		c, cancel := context.WithDeadline(ctx, d.Add(-time.Minute))
		t.Cleanup(cancel)
		ctx = c
	}
	return ctx
}

// boot starts disk as the firmware would and waits until the stand-in is
// ready; it returns the VM, its records and the command line the image gave.
func (e *env) boot(ctx context.Context, t *testing.T, name, arch, disk string) (*vm, map[string]string, bootSpec) {
	t.Helper()
	spec, err := extractBoot(ctx, disk, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	v := startVM(ctx, t, name, arch, disk, spec)
	rec := v.ready(ctx, t)
	t.Logf("%s: stand-in k3s ready %s after QEMU started: role=%s hostname=%s config.yaml=%s marker_prev=%s firstboot=%q",
		name, elapsedSince(t0), rec["role"], rec["hostname"], rec["config_mode"], rec["marker_prev"],
		strings.ReplaceAll(rec["firstboot_unit"], "\n", " "))
	return v, rec, spec
}

// expect is what a node's stand-in k3s must have reported.
type expect struct {
	Role     string   // server or agent
	Hostname string   // /etc/hostname
	Config   []string // lines of config.yaml or config.yaml.d
}

func checkNode(t *testing.T, rec map[string]string, spec bootSpec, x expect) {
	t.Helper()
	if got := rec["role"]; got != x.Role {
		t.Errorf("k3s started as %q (argv %s), want %q", got, rec["argv"], x.Role)
	}
	if got := rec["config_mode"]; got != "0600 0:0" {
		t.Errorf("config.yaml mode and owner = %q, want \"0600 0:0\"", got)
	}
	if got := rec["hostname"]; got != x.Hostname {
		t.Errorf("hostname = %q, want %q", got, x.Hostname)
	}
	cfg := rec["config"] + "\n" + rec["config_d"]
	for _, line := range x.Config {
		if !strings.Contains(cfg, line) {
			t.Errorf("k3s config lacks %q; it is:\n%s", line, redactToken(cfg))
		}
	}
	if want := spec.Cmdline + " console=ttyAMA0"; rec["cmdline"] != want {
		t.Errorf("running kernel's /proc/cmdline = %q, want cmdline.txt's %q (+ console=ttyAMA0)", rec["cmdline"], want)
	}
	if !hasWord(rec["cgroup_controllers"], "memory") {
		t.Errorf("cgroup controllers %q lack memory", rec["cgroup_controllers"])
	}
}

// redactToken hides the join token when a config is shown.
func redactToken(cfg string) string {
	lines := strings.Split(cfg, "\n")
	for i, l := range lines {
		if k, _, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "token" {
			lines[i] = k + ": <redacted>"
		}
	}
	return strings.Join(lines, "\n")
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// powerOffClean powers the VM off through its power button and checks that
// the root file system it leaves is clean.
func powerOffClean(ctx context.Context, t *testing.T, v *vm, disk string) {
	t.Helper()
	t0 := time.Now()
	pctx, cancel := context.WithTimeout(ctx, 8*time.Minute)
	defer cancel()
	if err := v.powerOff(pctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: powered off in %s", v.name, elapsedSince(t0))
	if out, err := fsckRoot(ctx, disk, t.TempDir()); err != nil {
		t.Fatalf("root file system after a clean poweroff: %v\n%s", err, out)
	}
}

// testHandInstalled boots the base image with the stand-in k3s installed by
// hand: the fixture boots to multi-user.target, k3s starts with its config
// and the node powers off cleanly.
func (e *env) testHandInstalled(t *testing.T, arch string) {
	ctx := testContext(t)
	img, err := e.handInstalledImage(ctx, t, arch)
	if err != nil {
		t.Fatal(err)
	}
	disk := diskCopy(t, img, "disk.img")
	defer e.slot(ctx, t)()
	v, rec, spec := e.boot(ctx, t, "hand-"+arch, arch, disk)
	checkNode(t, rec, spec, expect{Role: "server", Hostname: "raspberrypi", Config: []string{"e2e=hand-installed"}})
	if rec["marker_prev"] != "0" {
		t.Errorf("marker before the first boot = %q, want 0", rec["marker_prev"])
	}
	powerOffClean(ctx, t, v, disk)
}
