package firstboot

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/config"
)

// TestAccountScript runs the first-boot script of a node with a user, in
// mount and UTS namespaces over a private copy of the host's /etc, /home
// and /var/lib, with the real useradd, chpasswd and usermod: the account
// exists with the password hash, the key and sudo, and the staged hash is
// gone. With a userconf-pi (a stand-in that records its arguments) and a
// first user (uid 1000), the script hands the account to it instead.
func TestAccountScript(t *testing.T) {
	for _, tool := range []string{"useradd", "chpasswd", "usermod", "getent"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install passwd): cannot run the account set-up", tool)
		}
	}
	in := cases(t)["settings-bookworm-nm"]
	p, err := Plan(in)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, data, mode); err != nil {
			t.Fatal(err)
		}
		return f
	}
	script := write("firstboot", entryData(t, p, scriptDir+"/firstboot"), 0o755)
	hash := write("password-hash", entryData(t, p, passwordHashPath), 0o600)
	keys := write("authorized_keys", entryData(t, p, userKeysPath), 0o600)
	fake := filepath.Join(dir, "bin")
	os.Mkdir(fake, 0o755)
	os.WriteFile(filepath.Join(fake, "hostnamectl"), []byte("#!/bin/sh\nexit 0\n"), 0o755)
	os.WriteFile(filepath.Join(fake, "setupcon"), []byte("#!/bin/sh\nexit 0\n"), 0o755)
	os.WriteFile(filepath.Join(fake, "locale-gen"), []byte("#!/bin/sh\nexit 0\n"), 0o755)
	setup := func(extra string) string {
		return strings.Join([]string{
			"rm -rf " + dir + "/etc " + dir + "/home " + dir + "/varlib",
			"mkdir " + dir + "/etc " + dir + "/home " + dir + "/varlib",
			"cp -a /etc/. " + dir + "/etc/",
			"mount --bind " + dir + "/etc /etc",
			"mount --bind " + dir + "/home /home",
			"mount --bind " + dir + "/varlib /var/lib",
			"mkdir -p /var/lib/imgbake",
			"cp " + hash + " " + keys + " /var/lib/imgbake/",
			"mount -t tmpfs none /sys/fs/cgroup",
			"echo memory >/sys/fs/cgroup/cgroup.controllers",
			"userdel -r alice >/dev/null 2>&1 || true",
			extra,
		}, "\n")
	}
	out := inNamespace(t, setup(""), "PATH="+fake+":$PATH "+script+`
echo "passwd=$(getent passwd alice)"
echo "shadow=$(getent shadow alice | cut -d: -f2)"
echo "groups=$(id -nG alice)"
echo "keys=$(stat -c '%a %U' /home/alice/.ssh/authorized_keys) $(cat /home/alice/.ssh/authorized_keys)"
ls /var/lib/imgbake/`)
	s := config.NodeSettings(in.Cluster, in.Node, in.Secrets)
	for _, w := range []string{
		"passwd=alice:x:", ":/home/alice:/bin/bash",
		"shadow=" + s.PasswordHash,
		"keys=600 alice " + aliceKey,
		"imgbake: first-boot setup done",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if !strings.Contains(out, " sudo") {
		t.Errorf("alice is not in group sudo:\n%s", out)
	}
	if strings.Contains(out, "password-hash") || strings.Contains(out, "\nauthorized_keys") {
		t.Errorf("the staged hash or keys were not removed:\n%s", out)
	}

	// Raspberry Pi OS: userconf-pi renames the first user.
	userconf := `#!/bin/sh
echo "userconf called: $*"
`
	out = inNamespace(t, setup("useradd -u 1000 -m pi 2>/dev/null || true\nmkdir -p /usr/lib/userconf-pi\nmount -t tmpfs none /usr/lib/userconf-pi\nprintf '%s' '"+userconf+"' >/usr/lib/userconf-pi/userconf\nchmod 755 /usr/lib/userconf-pi/userconf"),
		"PATH="+fake+":$PATH "+script)
	if !strings.Contains(out, "userconf called: alice "+s.PasswordHash) {
		t.Errorf("userconf-pi was not asked to rename the first user to alice with the hash:\n%s", out)
	}
}
