package firstboot

import (
	"fmt"
	"strings"

	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/internal/pwhash"
)

// Where the first-boot script finds the login user's password hash and
// keys (root-only; it removes them once the account is set up).
const (
	stateDir         = "/var/lib/imgbake"
	passwordHashPath = stateDir + "/password-hash"
	userKeysPath     = stateDir + "/authorized_keys"
)

// userGroups are the groups the first user of Raspberry Pi OS (pi-gen's
// FIRST_USER_NAME) and Armbian (armbian-firstlogin) belongs to; the
// first-boot script adds the user to those the image has.
const userGroups = "adm dialout cdrom audio video plugdev games users input render netdev spi i2c gpio bluetooth systemd-journal"

// rfkillWLAN are the state files systemd-rfkill restores for the on-board
// Wi-Fi of the Raspberry Pi models (Pi 3 and Zero 2 W, Pi 4/400/CM4, Pi 5,
// Zero W): Raspberry Pi OS keeps Wi-Fi blocked (rfkill.default_state=0)
// until a country is set, and raspi-config's do_wifi_country writes 0 to
// them.
var rfkillWLAN = []string{"platform-3f300000.mmcnr", "platform-fe300000.mmcnr", "platform-1001100000.mmc", "platform-20300000.mmcnr"}

// settings returns the node's first-boot settings (cluster, node, secrets).
func (b *builder) settings() config.Settings {
	return config.NodeSettings(b.in.Cluster, b.in.Node, b.in.Secrets)
}

// checkSettings refuses settings the base cannot apply.
func checkSettings(in Input) error {
	if in.Cluster == nil {
		return nil
	}
	s := config.NodeSettings(in.Cluster, in.Node, in.Secrets)
	if s.PasswordHash != "" && s.User == nil {
		return fmt.Errorf("the secrets file has a password-hash but the cluster file sets no user: add user: {name: ...} (the account the password is for)")
	}
	if m := pwhash.MethodOf(s.PasswordHash); m == pwhash.Yescrypt && (in.OS.Release == "buster" || in.OS.Family == "hypriotos") {
		return fmt.Errorf("the password hash is yescrypt, which this %s %s base cannot check (its glibc predates it): make a sha512-crypt one with `imgbake init --user %s --password --password-method sha512-crypt --force` or `openssl passwd -6`, and put it in password-hash: in the secrets file", in.OS.Family, in.OS.Release, s.User.Name)
	}
	return nil
}

// settingsWarnings are Check's warnings about first-boot settings.
func settingsWarnings(in Input) []string {
	if in.Cluster == nil {
		return nil
	}
	var w []string
	s := config.NodeSettings(in.Cluster, in.Node, in.Secrets)
	if msg := config.LoginWarning(in.Cluster, in.Node, s); msg != "" {
		w = append(w, msg)
	}
	if config.WiFiOnly(in.Node.Model) && s.WiFi == nil {
		w = append(w, "a Raspberry Pi Zero 2 W has no Ethernet: without wifi: (ssid and country in the cluster file, passphrase in the secrets file) it cannot join the cluster")
	}
	return w
}

// login reports whether imgbake gives the node a way to log in (a user, or
// SSH keys for an existing account).
func (b *builder) login(s config.Settings) bool {
	return s.User != nil || len(b.in.Cluster.SSH.AuthorizedKeys)+len(b.in.Node.SSH.AuthorizedKeys) > 0
}

// firstBootSettings adds the login user, timezone, locale, keyboard and
// Wi-Fi, each the way the release's own tools set them.
func (b *builder) firstBootSettings() error {
	s := b.settings()
	if s.User != nil {
		b.user(s)
	}
	if b.login(s) {
		b.noWizard()
	}
	b.timezone(s.Timezone)
	b.locale(s.Locale)
	b.keyboard(s.Keyboard)
	if s.WiFi != nil {
		if err := b.wifi(s); err != nil {
			return err
		}
	}
	return nil
}

// user stages the account's password hash and keys for the first-boot
// script, which creates (or, on Raspberry Pi OS, renames) the account
// before anyone can log in, and lets it use sudo.
func (b *builder) user(s config.Settings) {
	u := s.User
	b.dir(stateDir, 0o755, 0, 0)
	if s.PasswordHash != "" {
		b.secret(passwordHashPath, s.PasswordHash+"\n")
	}
	keys := append([]string(nil), u.AuthorizedKeys...)
	if b.sshUser() == u.Name {
		keys = appendNew(keys, b.sshKeys()...)
	}
	if len(keys) > 0 {
		b.p.Entries = append(b.p.Entries, plan.Entry{Part: plan.Root, Path: userKeysPath, Kind: plan.File, Mode: 0o600, Data: []byte(strings.Join(keys, "\n") + "\n")})
	}
	// Without a password, sudo could not ask for one.
	if u.Sudo == "nopasswd" || u.Sudo == "yes" && s.PasswordHash == "" {
		b.file("/etc/sudoers.d/010_imgbake-"+u.Name, 0o440, "# Written by imgbake: "+u.Name+" may use sudo without a password.\n"+u.Name+" ALL=(ALL) NOPASSWD: ALL\n")
	}
}

// noWizard keeps the base's interactive first-boot account wizard from
// waiting for a keyboard, as the distribution's own tools do once a user
// is set up: userconf-pi's cancel-rename (userconfig.service off,
// getty@tty1 on, no rename banner in sshd) on Raspberry Pi OS;
// armbian-firstlogin's end state (no /root/.not_logged_in_yet, no root
// autologin on the consoles) on Armbian.
func (b *builder) noWizard() {
	switch b.in.OS.Family {
	case "raspios":
		b.p.Removes = append(b.p.Removes, unitDir+"/multi-user.target.wants/userconfig.service", "/etc/ssh/sshd_config.d/rename_user.conf")
		b.symlink(unitDir+"/getty.target.wants/getty@tty1.service", "/lib/systemd/system/getty@.service")
	case "armbian":
		b.p.Removes = append(b.p.Removes, "/root/.not_logged_in_yet",
			unitDir+"/getty@.service.d/override.conf", unitDir+"/serial-getty@.service.d/override.conf")
	}
}

// timezone sets /etc/localtime and /etc/timezone as raspi-config's
// do_change_timezone (through tzdata's configuration) leaves them.
func (b *builder) timezone(tz string) {
	if tz == "" {
		return
	}
	b.symlink("/etc/localtime", "/usr/share/zoneinfo/"+tz)
	b.file("/etc/timezone", 0o644, tz+"\n")
}

// localeName is the locale with its charset (en_GB -> en_GB.UTF-8) and the
// locale.gen line that generates it.
func localeName(l string) (name, genLine string) {
	if !strings.Contains(l, ".") && l != "C" && l != "POSIX" {
		l += ".UTF-8"
	}
	charset := "UTF-8"
	if _, cs, ok := strings.Cut(l, "."); ok {
		cs, _, _ = strings.Cut(cs, "@")
		if strings.EqualFold(cs, "utf8") || strings.EqualFold(cs, "utf-8") {
			cs = "UTF-8"
		}
		charset = cs
	}
	return l, l + " " + charset
}

// locale sets LANG in /etc/default/locale (update-locale's file) and
// enables the locale in /etc/locale.gen; the first-boot script runs
// locale-gen when the image lacks it (raspi-config's do_change_locale).
func (b *builder) locale(l string) {
	if l == "" {
		return
	}
	name, gen := localeName(l)
	b.edit(plan.Root, "/etc/default/locale", "LANG="+name, 0o644, func(old []byte) ([]byte, error) {
		return setShellVar(old, "LANG", name, false), nil
	})
	if strings.HasPrefix(name, "C.") || name == "C" || name == "POSIX" {
		return // built into glibc
	}
	b.edit(plan.Root, "/etc/locale.gen", "enable "+gen, 0o644, func(old []byte) ([]byte, error) {
		return enableLocale(old, gen), nil
	})
}

// keyboard sets the console and X keyboard layout in /etc/default/keyboard
// (raspi-config's do_configure_keyboard); the first-boot script applies it.
func (b *builder) keyboard(layout string) {
	if layout == "" {
		return
	}
	b.edit(plan.Root, "/etc/default/keyboard", "XKBLAYOUT="+layout, 0o644, func(old []byte) ([]byte, error) {
		if len(old) == 0 {
			old = []byte("# KEYBOARD CONFIGURATION FILE\n\n# Consult the keyboard(5) manual page.\n\nXKBMODEL=\"pc105\"\nXKBLAYOUT=\"us\"\nXKBVARIANT=\"\"\nXKBOPTIONS=\"\"\n\nBACKSPACE=\"guess\"\n")
		}
		return setShellVar(old, "XKBLAYOUT", layout, true), nil
	})
}

// setShellVar sets KEY=value (quoted or not) in a KEY=value file: in place
// of the first setting of KEY, else of the first commented-out one, else
// appended. Later settings of KEY, which would win, are dropped.
func setShellVar(old []byte, key, value string, quote bool) []byte {
	line := key + "=" + value
	if quote {
		line = key + `="` + value + `"`
	}
	lines := strings.SplitAfter(string(old), "\n")
	set, commented := -1, -1
	for i, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(t, key+"="):
			if set >= 0 {
				lines[i] = ""
				continue
			}
			set = i
		case commented < 0 && strings.HasPrefix(strings.TrimSpace(strings.TrimPrefix(t, "#")), key+"=") && strings.HasPrefix(t, "#"):
			commented = i
		}
	}
	switch {
	case set >= 0:
		lines[set] = line + "\n"
	case commented >= 0:
		lines[commented] = line + "\n"
	default:
		out := strings.Join(lines, "")
		if out != "" && !strings.HasSuffix(out, "\n") {
			out += "\n"
		}
		return []byte(out + line + "\n")
	}
	return []byte(strings.Join(lines, ""))
}

// enableLocale uncomments gen ("en_GB.UTF-8 UTF-8") in locale.gen, or adds
// it.
func enableLocale(old []byte, gen string) []byte {
	lines := strings.SplitAfter(string(old), "\n")
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if strings.Join(strings.Fields(strings.TrimLeft(t, "# ")), " ") == gen {
			if strings.HasPrefix(t, "#") {
				lines[i] = gen + "\n"
			}
			return []byte(strings.Join(lines, ""))
		}
	}
	out := string(old)
	if out != "" && !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	return []byte(out + gen + "\n")
}

func appendNew(list []string, add ...string) []string {
	for _, s := range add {
		found := false
		for _, o := range list {
			if o == s {
				found = true
			}
		}
		if !found {
			list = append(list, s)
		}
	}
	return list
}

// settingsScript is the first-boot script's part for the settings: what
// cannot be done offline (the account, with the release's own tools;
// locale-gen; applying the keyboard; lifting the Wi-Fi block). The
// password hash is read from a root-only file, never from the command
// line of the script.
func (b *builder) settingsScript() string {
	s := b.settings()
	var sc strings.Builder
	if u := s.User; u != nil {
		sudo := ""
		if u.Sudo != "no" {
			sudo = " sudo"
		}
		fmt.Fprintf(&sc, `
# The login user, set up before anyone can log in (this unit runs before
# systemd-user-sessions and ssh). Raspberry Pi OS renames its first user
# (uid 1000) with userconf-pi, as Raspberry Pi Imager does; elsewhere the
# account is created unless cloud-init already made it.
user=%[1]s
hash=
if [ -s %[2]s ]; then
	hash=$(cat %[2]s)
fi
first=$(getent passwd 1000 | cut -d: -f1)
if [ -x /usr/lib/userconf-pi/userconf ] && [ -n "$first" ] && ! id "$user" >/dev/null 2>&1; then
	/usr/lib/userconf-pi/userconf "$user" "$hash" || echo "<3>imgbake: userconf could not rename $first to $user"
elif ! id "$user" >/dev/null 2>&1; then
	useradd --create-home --user-group --shell /bin/bash "$user" || echo "<3>imgbake: could not create user $user"
fi
if [ -n "$hash" ]; then
	printf '%%s:%%s\n' "$user" "$hash" | chpasswd -e || echo "<3>imgbake: could not set the password of $user"
fi
for g in %[3]s%[4]s; do
	if getent group "$g" >/dev/null; then
		usermod -a -G "$g" "$user"
	fi
done
home=$(getent passwd "$user" | cut -d: -f6)
if [ -s %[5]s ] && [ -n "$home" ]; then
	install -d -m 0700 -o "$user" -g "$(id -g "$user")" "$home/.ssh"
	touch "$home/.ssh/authorized_keys"
	while IFS= read -r key; do
		grep -qxF "$key" "$home/.ssh/authorized_keys" || printf '%%s\n' "$key" >>"$home/.ssh/authorized_keys"
	done <%[5]s
	chown "$user:$(id -g "$user")" "$home/.ssh/authorized_keys"
	chmod 0600 "$home/.ssh/authorized_keys"
fi
rm -f %[2]s %[5]s
echo "imgbake: user $(id "$user" 2>&1)"
`, shQuote(u.Name), passwordHashPath, userGroups, sudo, userKeysPath)
		if b.in.OS.Family == "armbian" {
			sc.WriteString(`# armbian-firstlogin would have made root's password (1234) be changed;
# it is skipped, so root's password is locked instead (keys still work).
usermod -L root
`)
		}
	}
	if s.Locale != "" {
		name, _ := localeName(s.Locale)
		if !strings.HasPrefix(name, "C.") && name != "C" && name != "POSIX" {
			fmt.Fprintf(&sc, `
# The locale: generate it unless the image has it already.
norm=$(echo %[1]s | sed 's/\.[Uu][Tt][Ff]-\?8/.utf8/')
if ! locale -a 2>/dev/null | grep -qxF "$norm" && command -v locale-gen >/dev/null; then
	locale-gen >/dev/null || echo "<3>imgbake: locale-gen failed for %[1]s"
fi
`, name)
		}
	}
	if s.Keyboard != "" {
		sc.WriteString(`
# The keyboard layout (/etc/default/keyboard): rebuild the console's cached
# keymap and apply it, as raspi-config does.
if command -v setupcon >/dev/null; then
	setupcon --force --save-only -k 2>/dev/null || true
	if [ -e /dev/tty1 ]; then
		setupcon --force -k </dev/tty1 >/dev/null 2>&1 || true
	fi
fi
command -v udevadm >/dev/null && udevadm trigger --subsystem-match=input --action=change || true
`)
	}
	if w := s.WiFi; w != nil {
		fmt.Fprintf(&sc, `
# Wi-Fi: the regulatory domain is on the kernel command line
# (cfg80211.ieee80211_regdom=%[1]s); lift the rfkill block Raspberry Pi OS
# keeps until a country is set, for any Wi-Fi device, as raspi-config does.
command -v iw >/dev/null && iw reg set %[1]s 2>/dev/null || true
for f in /var/lib/systemd/rfkill/*:wlan; do
	[ -e "$f" ] && echo 0 >"$f"
done
command -v rfkill >/dev/null && rfkill unblock wlan || true
`, w.Country)
	}
	if sc.Len() == 0 {
		return ""
	}
	return strings.TrimPrefix(sc.String(), "\n") + "\n"
}
