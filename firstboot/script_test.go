package firstboot

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/image/plan"
)

// inNamespace runs script under sh in private mount and UTS namespaces
// (unshare -mu), so it can mount over /etc/hostname and set the hostname
// without touching the host. setup runs first, in the same namespaces.
func inNamespace(t *testing.T, setup, script string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for unshare -mu (mount and UTS namespaces)")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare not installed (util-linux)")
	}
	if out, err := exec.Command("unshare", "-mu", "true").CombinedOutput(); err != nil {
		t.Skipf("cannot create namespaces here: %v %s", err, out)
	}
	out, err := exec.Command("unshare", "-mu", "--propagation", "private", "sh", "-ec", setup+"\n"+script).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return string(out)
}

func entryData(t *testing.T, p *plan.Plan, path string) []byte {
	t.Helper()
	for _, e := range p.Entries {
		if e.Path == path {
			return e.Data
		}
	}
	t.Fatalf("%s not in the plan", path)
	return nil
}

// TestFirstbootScript runs the first-boot script with a fake
// cgroup.controllers: it sets the hostname, reports the memory cgroup (or
// says how to fix its absence) and writes the stamp.
func TestFirstbootScript(t *testing.T) {
	p, err := Plan(cases(t)["bookworm-arm64-worker"])
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "firstboot")
	if err := os.WriteFile(script, entryData(t, p, scriptDir+"/firstboot"), 0o755); err != nil {
		t.Fatal(err)
	}
	// hostnamectl fails as it does without systemd-hostnamed: the script
	// falls back to hostname(1).
	fake := filepath.Join(dir, "bin")
	os.Mkdir(fake, 0o755)
	os.WriteFile(filepath.Join(fake, "hostnamectl"), []byte("#!/bin/sh\nexit 1\n"), 0o755)
	os.WriteFile(filepath.Join(dir, "hostname"), []byte("raspberrypi\n"), 0o644)

	for _, c := range []struct {
		controllers string
		want        []string
	}{
		{"cpuset cpu io memory pids", []string{"imgbake: memory cgroup enabled"}},
		{"cpuset cpu io pids", []string{"<3>imgbake: the memory cgroup is not enabled, so k3s will not start.",
			"<3>imgbake: to fix it, add cgroup_memory=1 cgroup_enable=memory to the end of the single line in /boot/firmware/cmdline.txt and reboot."}},
	} {
		setup := strings.Join([]string{
			"mount --bind " + dir + "/hostname /etc/hostname",
			"mount -t tmpfs none /var/lib",
			"mount -t tmpfs none /sys/fs/cgroup",
			"echo '" + c.controllers + "' >/sys/fs/cgroup/cgroup.controllers",
			"hostname before",
		}, "\n")
		out := inNamespace(t, setup, "PATH="+fake+":$PATH "+script+"\necho \"etc=$(cat /etc/hostname) uts=$(hostname)\"\ntest -f "+StampPath+" && echo stamped")
		for _, w := range append(c.want, "imgbake: hostname is k5", "etc=k5 uts=k5", "stamped") {
			if !strings.Contains(out, w) {
				t.Errorf("controllers %q: output lacks %q:\n%s", c.controllers, w, out)
			}
		}
	}
}

// TestRoleLabelsScript runs the reconciler against a fake k3s that lists
// two labelled nodes and records the kubectl label calls.
func TestRoleLabelsScript(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "role-labels")
	if err := os.WriteFile(script, []byte(roleLabelsScript), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "calls")
	fakeK3s := `#!/bin/sh
echo "$*" >>` + log + `
case "$*" in
"kubectl get nodes -l imgbake.io/role -o jsonpath="*) printf 'k5 worker\nk6 gpu\n' ;;
"kubectl label node k6 "*) exit 1 ;;
esac
`
	bin := filepath.Join(dir, "usrlocalbin")
	os.Mkdir(bin, 0o755)
	os.WriteFile(filepath.Join(bin, "k3s"), []byte(fakeK3s), 0o755)
	out := inNamespace(t, "mount --bind "+bin+" /usr/local/bin", script)
	calls, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		"kubectl label node k5 node-role.kubernetes.io/worker=true --overwrite",
		"kubectl label node k6 node-role.kubernetes.io/gpu=true --overwrite",
	} {
		if !strings.Contains(string(calls), w) {
			t.Errorf("no call %q in:\n%s", w, calls)
		}
	}
	if !strings.Contains(out, "<4>imgbake: could not label node k6 with role gpu") {
		t.Errorf("failure not reported: %q", out)
	}
}
