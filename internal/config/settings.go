package config

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	_ "time/tzdata" // timezone: names are checked the same on every host
)

// The first-boot settings Raspberry Pi Imager users expect: a login user,
// Wi-Fi, timezone, locale and keyboard. They are set cluster-wide in the
// cluster file and a node may override them; their secrets (password hash,
// Wi-Fi passphrase) live only in the secrets file.

// User is the login account a node has from its first boot.
type User struct {
	// Name is the account's name (Raspberry Pi OS renames its first user,
	// uid 1000, to it, as its own first-boot tools do).
	Name string `yaml:"name"`
	// AuthorizedKeys are OpenSSH public keys that may log in as the user.
	// A node's keys are added to the cluster's.
	AuthorizedKeys []string `yaml:"authorized-keys"`
	// Sudo is "yes" (default: a member of the sudo group), "nopasswd" (sudo
	// without a password, as Raspberry Pi OS's first user has) or "no".
	Sudo string `yaml:"sudo"`
}

// WiFi is the wireless network a node joins. Its passphrase or PSK is in
// the secrets file (wifi: in it); without one the network is open.
type WiFi struct {
	SSID string `yaml:"ssid"`
	// Hidden networks are probed by name (scan_ssid=1).
	Hidden bool `yaml:"hidden"`
	// Country is the regulatory domain, an ISO 3166 code such as GB or US.
	// Raspberry Pi OS keeps Wi-Fi blocked until it is set.
	Country string `yaml:"country"`
}

// WiFiSecret is the secret part of a Wi-Fi setting: a passphrase (8 to 63
// printable ASCII characters) or the 64-hex-digit PSK derived from it.
type WiFiSecret struct {
	Passphrase string `yaml:"passphrase"`
	PSK        string `yaml:"psk"`
}

// NodeSecrets are a node's own secrets, overriding the cluster's.
type NodeSecrets struct {
	PasswordHash string     `yaml:"password-hash"`
	WiFi         WiFiSecret `yaml:"wifi"`
}

// Settings are one node's first-boot settings: the cluster's, overridden by
// the node's, with their secrets. The zero value sets nothing.
type Settings struct {
	// User is nil when no user is configured.
	User *User
	// PasswordHash is the user's crypt(3) password hash, "" for none
	// (SSH keys only).
	PasswordHash string
	// WiFi is nil without Wi-Fi.
	WiFi       *WiFi
	WiFiSecret WiFiSecret
	Timezone   string
	Locale     string
	Keyboard   string
}

// NodeSettings merges the cluster's and node n's first-boot settings with
// their secrets (s may be nil). A node's user fields override the
// cluster's one by one (keys are added); a node's wifi replaces the
// cluster's.
func NodeSettings(c *Cluster, n Node, s *Secrets) Settings {
	var out Settings
	if c.User != nil || n.User != nil {
		u := User{}
		for _, from := range []*User{c.User, n.User} {
			if from == nil {
				continue
			}
			u.Name = firstNonEmpty(from.Name, u.Name)
			u.Sudo = firstNonEmpty(from.Sudo, u.Sudo)
			for _, k := range from.AuthorizedKeys {
				if k = strings.TrimSpace(k); !slices.Contains(u.AuthorizedKeys, k) {
					u.AuthorizedKeys = append(u.AuthorizedKeys, k)
				}
			}
		}
		if u.Sudo == "" {
			u.Sudo = "yes"
		}
		u.Sudo = normalSudo(u.Sudo)
		out.User = &u
	}
	out.WiFi = c.WiFi
	if n.WiFi != nil {
		out.WiFi = n.WiFi
	}
	if out.WiFi != nil {
		w := *out.WiFi
		w.Country = strings.ToUpper(w.Country)
		out.WiFi = &w
	}
	out.Timezone = firstNonEmpty(n.Timezone, c.Timezone)
	out.Locale = firstNonEmpty(n.Locale, c.Locale)
	out.Keyboard = firstNonEmpty(n.Keyboard, c.Keyboard)
	if s != nil {
		ns := s.Nodes[n.Name]
		out.PasswordHash = firstNonEmpty(ns.PasswordHash, s.PasswordHash)
		out.WiFiSecret = s.WiFi
		if ns.WiFi != (WiFiSecret{}) {
			out.WiFiSecret = ns.WiFi
		}
	}
	return out
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func normalSudo(s string) string {
	switch strings.ToLower(s) {
	case "yes", "true", "on":
		return "yes"
	case "no", "false", "off":
		return "no"
	case "nopasswd":
		return "nopasswd"
	}
	return s
}

var (
	countryRE  = regexp.MustCompile(`^[A-Za-z]{2}$`)
	localeRE   = regexp.MustCompile(`^([a-z]{2,3}(_[A-Z]{2})?|C)(\.(UTF-8|utf8|ISO-8859-[0-9]+))?(@[a-z]+)?$`)
	keyboardRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
	hashRE     = regexp.MustCompile(`^\$(y|gy|7|6|5|2b|2y)\$[./A-Za-z0-9$=,]{8,}$`)
	pskRE      = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
)

// checkSettings records problems with the first-boot settings at f ("" for
// the cluster, nodes[i] for a node).
func checkSettings(d *Doc, f string, u *User, w *WiFi, tz, locale, keyboard string) {
	at := func(s string) string {
		if f == "" {
			return s
		}
		return f + "." + s
	}
	if u != nil {
		switch {
		case u.Name == "" && f == "":
			d.Errorf(at("user.name"), "missing: the login user's name (lower-case letters, digits, '-' and '_'), e.g. name: pi")
		case u.Name == "root":
			d.Errorf(at("user.name"), "root is not a login user here; give your own name (root's SSH keys go under ssh:)")
		case u.Name != "" && !userRE.MatchString(u.Name):
			d.Errorf(at("user.name"), "%q is not a user name: lower-case letters, digits, '-' and '_', starting with a letter, at most 32", u.Name)
		}
		if u.Sudo != "" && !slices.Contains([]string{"yes", "no", "nopasswd"}, normalSudo(u.Sudo)) {
			d.Errorf(at("user.sudo"), "%q: use yes (sudo with the user's password), nopasswd or no", u.Sudo)
		}
		checkKeys(d, at("user.authorized-keys"), u.AuthorizedKeys)
	}
	if w != nil {
		switch {
		case w.SSID == "":
			d.Errorf(at("wifi.ssid"), "missing: the network's name (SSID)")
		case len(w.SSID) > 32:
			d.Errorf(at("wifi.ssid"), "%q is %d bytes; an SSID has at most 32", w.SSID, len(w.SSID))
		case strings.ContainsAny(w.SSID, "\x00\r\n"):
			d.Errorf(at("wifi.ssid"), "an SSID cannot hold a line break or NUL")
		}
		switch {
		case w.Country == "":
			d.Errorf(at("wifi.country"), "missing: the Wi-Fi regulatory domain, the two-letter country code where the node runs (GB, US, DE, ...); Raspberry Pi OS keeps Wi-Fi off until it is set")
		case !countryRE.MatchString(w.Country):
			d.Errorf(at("wifi.country"), "%q is not a two-letter country code (ISO 3166, e.g. GB, US, DE)", w.Country)
		}
	}
	if tz != "" {
		if err := CheckTimezone(tz); err != nil {
			d.Errorf(at("timezone"), "%v", err)
		}
	}
	if locale != "" && !localeRE.MatchString(locale) {
		d.Errorf(at("locale"), "%q is not a locale name such as en_GB.UTF-8 or C.UTF-8", locale)
	}
	if keyboard != "" && !keyboardRE.MatchString(keyboard) {
		d.Errorf(at("keyboard"), "%q is not a keyboard layout such as gb, us or de (an XKB layout name)", keyboard)
	}
}

// CheckTimezone checks a tz database name such as Europe/London or UTC.
func CheckTimezone(tz string) error {
	if tz == "Local" || strings.HasPrefix(tz, "/") || strings.Contains(tz, "..") {
		return fmt.Errorf("%q is not a timezone name; use one such as Europe/London, America/New_York or UTC", tz)
	}
	if _, err := time.LoadLocation(tz); err != nil {
		return fmt.Errorf("%q is not a timezone name; use one such as Europe/London, America/New_York or UTC (see timedatectl list-timezones)", tz)
	}
	return nil
}

func checkKeys(d *Doc, f string, keys []string) {
	for i, k := range keys {
		if err := CheckAuthorizedKey(k); err != nil {
			d.Errorf(fmt.Sprintf("%s[%d]", f, i), "%v", err)
		}
	}
}

// checkSecretSettings records problems with the secrets' first-boot
// settings at f, never echoing a secret.
func checkSecretSettings(d *Doc, f, hash string, w WiFiSecret) {
	at := func(s string) string {
		if f == "" {
			return s
		}
		return f + "." + s
	}
	if hash != "" && !hashRE.MatchString(hash) {
		d.Errorf(at("password-hash"), "not a crypt(3) password hash ($y$... yescrypt or $6$... sha512-crypt): make one with `mkpasswd -m yescrypt` or `openssl passwd -6`, or run `imgbake init --user NAME --password` (the password itself never goes here)")
	}
	switch {
	case w.Passphrase != "" && w.PSK != "":
		d.Errorf(at("wifi"), "give passphrase or psk, not both")
	case w.Passphrase != "" && (len(w.Passphrase) < 8 || len(w.Passphrase) > 63 || !printableASCII(w.Passphrase)):
		d.Errorf(at("wifi.passphrase"), "a WPA passphrase is 8 to 63 printable ASCII characters; this one is not (length %d)", len(w.Passphrase))
	case w.PSK != "" && !pskRE.MatchString(w.PSK):
		d.Errorf(at("wifi.psk"), "a WPA PSK is 64 hex digits (wpa_passphrase prints it); this one is not")
	}
}

func printableASCII(s string) bool {
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			return false
		}
	}
	return true
}

// WiFiOnly reports whether a (canonical) model has Wi-Fi but no Ethernet
// port, so its network, static address included, is the Wi-Fi.
func WiFiOnly(model string) bool {
	return model == "pi02w" || model == "pi0w"
}

// LoginWarning returns the warning for a node nobody can log in to (no SSH
// key for the user or root, no password), or "".
func LoginWarning(c *Cluster, n Node, s Settings) string {
	if s.PasswordHash != "" && s.User != nil {
		return ""
	}
	if s.User != nil && len(s.User.AuthorizedKeys) > 0 {
		return ""
	}
	if len(c.SSH.AuthorizedKeys)+len(n.SSH.AuthorizedKeys) > 0 {
		return ""
	}
	return "nodes built without an SSH key or a password cannot be logged into (k3s still runs): to add a key, put your public key under user: in the cluster file, e.g.\n" +
		"    user:\n      name: pi\n      authorized-keys:\n        - ssh-ed25519 AAAA... you@laptop     # the content of ~/.ssh/id_ed25519.pub\n" +
		"  and build again (or `imgbake init --user pi --password` for a password)"
}
