package firstboot

import (
	"bytes"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/imgbake/imgbake/image/plan"
)

// cgroupFlags are the kernel parameters k3s needs on Raspberry Pi kernels.
const cgroupFlags = "cgroup_memory=1 cgroup_enable=memory"

// hostname writes /etc/hostname and points 127.0.1.1 in /etc/hosts at it.
func (b *builder) hostname() {
	name := b.node.name
	b.file("/etc/hostname", 0o644, name+"\n")
	b.edit(plan.Root, "/etc/hosts", "set the 127.0.1.1 line to "+name, 0o644, func(old []byte) ([]byte, error) {
		return editHosts(old, name), nil
	})
}

func editHosts(old []byte, name string) []byte {
	if old == nil {
		return []byte("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n\n127.0.1.1\t" + name + "\n")
	}
	lines := strings.SplitAfter(string(old), "\n")
	found := false
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == "127.0.1.1" {
			if found {
				lines[i] = ""
				continue
			}
			lines[i] = "127.0.1.1\t" + name + "\n"
			found = true
		}
	}
	out := strings.Join(lines, "")
	if !found {
		if out != "" && !strings.HasSuffix(out, "\n") {
			out += "\n"
		}
		out += "127.0.1.1\t" + name + "\n"
	}
	return []byte(out)
}

// cmdline adds the cgroup flags to the command line the image boots with.
func (b *builder) cmdline() {
	os := b.in.OS
	if os.CmdlinePath == "" {
		return // Check warns
	}
	desc := "add " + cgroupFlags
	var extra []string
	if w := b.settings().WiFi; w != nil {
		// The Wi-Fi regulatory domain, as raspi-config's do_wifi_country
		// sets it.
		extra = append(extra, "cfg80211.ieee80211_regdom="+w.Country)
		desc += " " + extra[0]
	}
	if needsUnifiedCgroup(b.in) {
		extra = append(extra, unifiedCgroup)
		desc += " " + unifiedCgroup + " (k3s >= 1.35 needs cgroup v2)"
	}
	if path.Base(os.CmdlinePath) == "armbianEnv.txt" {
		b.edit(os.CmdlinePart, os.CmdlinePath, desc+" to extraargs", 0o644, func(old []byte) ([]byte, error) {
			return editArmbianEnv(old, extra...)
		})
		return
	}
	b.edit(os.CmdlinePart, os.CmdlinePath, desc, 0o644, func(old []byte) ([]byte, error) {
		if old == nil {
			return nil, fmt.Errorf("%s is missing from the boot partition; is this a Raspberry Pi image?", os.CmdlinePath)
		}
		return editCmdline(old, extra...), nil
	})
}

// editCmdline adds the cgroup flags once to a cmdline.txt (one line; a
// second line would be ignored by the firmware) and drops
// cgroup_disable=memory.
func editCmdline(old []byte, extra ...string) []byte {
	line := strings.TrimRight(string(old), "\r\n\t ")
	if i := strings.IndexAny(line, "\r\n"); i >= 0 {
		line = line[:i] // the firmware reads only the first line
	}
	return []byte(addFlags(line, extra...) + "\n")
}

// addFlags adds the cgroup flags and extra ones (key=value, replacing the
// key's other values) to a command line.
func addFlags(args string, extra ...string) string {
	f := strings.Fields(args)
	f = slices.DeleteFunc(f, func(s string) bool { return s == "cgroup_disable=memory" })
	for _, e := range extra {
		key, _, _ := strings.Cut(e, "=")
		f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, key+"=") && s != e })
	}
	for _, flag := range append(strings.Fields(cgroupFlags), extra...) {
		if !slices.Contains(f, flag) {
			f = append(f, flag)
		}
	}
	return strings.Join(f, " ")
}

// editArmbianEnv adds the cgroup flags to extraargs= in armbianEnv.txt.
func editArmbianEnv(old []byte, extra ...string) ([]byte, error) {
	lines := strings.Split(strings.TrimRight(string(old), "\n"), "\n")
	if len(old) == 0 {
		lines = nil
	}
	done := false
	for i, l := range lines {
		if v, ok := strings.CutPrefix(l, "extraargs="); ok && !done {
			lines[i] = "extraargs=" + addFlags(v, extra...)
			done = true
		}
	}
	if !done {
		lines = append(lines, "extraargs="+addFlags("", extra...))
	}
	return []byte(strings.Join(lines, "\n") + "\n"), nil
}

// sshUser is the account ssh: installs keys for (root by default).
func (b *builder) sshUser() string {
	return firstOf(b.in.Node.SSH.User, b.in.Cluster.SSH.User, "root")
}

// sshKeys are ssh:'s keys, the cluster's then the node's.
func (b *builder) sshKeys() []string {
	var keys []string
	for _, k := range slices.Concat(b.in.Cluster.SSH.AuthorizedKeys, b.in.Node.SSH.AuthorizedKeys) {
		k = strings.TrimSpace(k)
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// ssh installs the authorized keys and enables the SSH server. Keys for
// the login user (user:) are installed with its account, at first boot.
func (b *builder) ssh() {
	c, n := b.in.Cluster.SSH, b.in.Node.SSH
	keys := b.sshKeys()
	s := b.settings()
	user := b.sshUser()
	if s.User != nil && user == s.User.Name {
		keys = nil
	}
	if len(keys) == 0 {
		if s.User != nil {
			b.enableSSH()
		}
		return
	}
	var uid, gid uint32
	home := "/root"
	if user != "root" {
		home = "/home/" + user
		uid = uint32(*firstOf(n.UID, c.UID, ptr(1000)))
		gid = uint32(*firstOf(n.GID, c.GID, n.UID, c.UID, ptr(1000)))
		b.dir("/home", 0o755, 0, 0)
		b.dir(home, 0o750, uid, gid)
	} else {
		b.dir(home, 0o700, 0, 0)
	}
	b.dir(home+"/.ssh", 0o700, uid, gid)
	b.p.Entries = append(b.p.Entries, plan.Entry{Part: plan.Root, Path: home + "/.ssh/authorized_keys", Kind: plan.File, Mode: 0o600, UID: uid, GID: gid, Data: []byte(strings.Join(keys, "\n") + "\n")})
	b.enableSSH()
}

// enableSSH enables sshd.
func (b *builder) enableSSH() {
	// Enable sshd as `systemctl enable ssh` does (Armbian has it on
	// already); Raspberry Pi OS also looks for an empty "ssh" file on the
	// boot partition.
	b.symlink(unitDir+"/multi-user.target.wants/ssh.service", "/lib/systemd/system/ssh.service")
	b.symlink(unitDir+"/sshd.service", "/lib/systemd/system/ssh.service")
	if b.in.OS.BootMount != "" && b.in.OS.Family != "armbian" {
		b.p.Entries = append(b.p.Entries, plan.Entry{Part: plan.Boot, Path: "/ssh", Kind: plan.File, Mode: 0o644})
	}
}

func firstOf[T comparable](vs ...T) T {
	var zero T
	for _, v := range vs {
		if v != zero {
			return v
		}
	}
	return zero
}

func ptr(i int) *int { return &i }

// replaceBlock replaces the text between begin and end marker lines (or
// appends block) so that editing twice gives the same file.
func replaceBlock(old []byte, begin, end, block string) []byte {
	s := string(old)
	if i := strings.Index(s, begin); i >= 0 {
		if j := strings.Index(s[i:], end); j >= 0 {
			rest := s[i+j+len(end):]
			rest = strings.TrimPrefix(rest, "\n")
			return []byte(s[:i] + block + rest)
		}
	}
	var buf bytes.Buffer
	buf.WriteString(s)
	if len(s) > 0 && !strings.HasSuffix(s, "\n") {
		buf.WriteByte('\n')
	}
	if len(s) > 0 {
		buf.WriteByte('\n')
	}
	buf.WriteString(block)
	return buf.Bytes()
}
