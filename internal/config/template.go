package config

import (
	"bytes"
	"fmt"
	"github.com/imgbake/imgbake/internal/k3s"
	"strconv"
)

// DefaultK3sVersion is the k3s release `imgbake init` pins when not told
// otherwise.
const DefaultK3sVersion = k3s.DefaultVersion

// TemplateOptions fills in the cluster file `imgbake init` writes.
type TemplateOptions struct {
	Server     string // default k1
	K3sVersion string // default DefaultK3sVersion
	Base       string // default a Raspberry Pi OS Lite file name
	// User is the login user's name; "" leaves user: as a comment.
	User string
}

// Template returns a commented cluster file that Load accepts.
func Template(o TemplateOptions) []byte {
	if o.Server == "" {
		o.Server = "k1"
	}
	if o.K3sVersion == "" {
		o.K3sVersion = DefaultK3sVersion
	}
	if o.Base == "" {
		o.Base = "2024-11-19-raspios-bookworm-arm64-lite.img.xz"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `# imgbake cluster file. Build images with:
#   imgbake build --profile server k1     # -> out/k1.img
#   imgbake build --profile worker k2     # -> out/k2.img
#   imgbake build --all                   # every node listed below
# Relative paths are relative to this file's directory.

# The k3s server agents join: a host name or IP (port 6443), host:port, or
# https://HOST:PORT. Servers also get it as a TLS SAN.
server: %s

k3s:
  # A pinned release tag from https://github.com/k3s-io/k3s/releases
  version: %s
  # Where releases are downloaded from; set it to use a mirror.
  # release-url: %s

# The Raspberry Pi OS / Armbian / HypriotOS image to start from
# (.img, .img.xz, .img.gz, .img.zst or .zip; never modified).
base: %s
# The sha256 its publisher lists for that file (the .sha256 beside the
# download): any other file is refused as a corrupt download.
# base-sha256: 0123...cdef

# output-dir: out                  # images are written here (<node>.img)
# cache-dir: ~/.cache/imgbake      # downloads and decompressed bases
# profiles-dir: profiles           # your own profiles (override server/worker)
# secrets-file: imgbake.secrets.yaml  # the join token (mode 0600)

%s
# Wi-Fi, timezone, locale and keyboard, as Raspberry Pi Imager sets them.
# The Wi-Fi passphrase goes in the secrets file (wifi: {passphrase: ...}).
# Any node may override these.
# wifi: {ssid: home, country: GB}  # country: the regulatory domain
# timezone: Europe/London
# locale: en_GB.UTF-8
# keyboard: gb

# Extra SSH keys for an existing account (root unless ssh.user is set).
# ssh:
#   user: root
#   authorized-keys:
#     - ssh-ed25519 AAAA... you@laptop

# The nodes. A node not listed here is built from its profile alone:
#   imgbake build --profile worker k9
nodes:
  - name: k1                       # hostname and Kubernetes node name
    profile: server
    model: pi4                     # pi02w, pi2, pi3, pi3+, pi4, pi400, pi5, cm4, ...
    # address: 192.168.1.11/24     # static IPv4 (default: DHCP)
    # gateway: 192.168.1.1
    # dns: [192.168.1.1]
  - name: k2
    profile: worker
    model: pi4
    labels:
      example.com/disk: ssd        # node-role.kubernetes.io/<role> is allowed too
    # taints: ["example.com/dedicated=db:NoSchedule"]
    # netboot: {serial: 1a2b3c4d, mac: "dc:a6:32:01:36:c2"}
  - name: k3
    profile: worker
    model: pi4

# Network boot: Pis that are not listed above and ask imgbake netboot to
# boot become nodes by this policy (recorded in imgbake.enrolled.yaml).
# mode: approve lists each new Pi (imgbake netboot pending) until you run
#   imgbake netboot approve SERIAL [--name k7]
# mode: auto enrols every Pi that asks. RISK: it hands a node image, with
# the cluster's join token in it, to ANY device on the boot network that
# answers like a Pi. Use it only on a network only your Pis reach.
# enroll:
#   mode: approve
#   profile: worker
#   name: worker-{n}               # {n} counts up, never reused; or w{serial}, pi-{mac}
#   models: [pi4, pi5]             # default: every model that runs k3s
#   max-nodes: 10                  # default: no limit
`, yamlScalar(o.Server), yamlScalar(o.K3sVersion), DefaultReleaseURL, yamlScalar(o.Base), userBlock(o.User))
	return b.Bytes()
}

// userBlock is the template's user: section, commented out without a name.
func userBlock(name string) string {
	c := "# "
	if name != "" {
		c = ""
	}
	return `# The login user every node has from its first boot (its password hash,
# if any, is in the secrets file: imgbake init --user NAME --password).
# sudo: yes (with the password), nopasswd or no.
` + c + "user:\n" + c + "  name: " + yamlScalar(firstNonEmpty(name, "pi")) + "\n" + c + `  sudo: yes
` + c + `  authorized-keys:
#     - ssh-ed25519 AAAA... you@laptop    # the content of ~/.ssh/id_ed25519.pub
`
}

func yamlScalar(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '/' || r == '+' || r == '_') {
			return strconv.Quote(s)
		}
	}
	return s
}
