package firstboot

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/imgbake/imgbake/image/plan"
	"gopkg.in/yaml.v3"
)

// cloudInit edits the cloud-init seeds on the FAT partition (Raspberry Pi OS
// Trixie, HypriotOS) so that cloud-init sets the same hostname and network
// as the rest of the image. The rest of the user's user-data is kept, and
// nothing secret is written here: the FAT is readable by anyone holding the
// card.
func (b *builder) cloudInit() {
	if !b.in.OS.CloudInit {
		return
	}
	name := b.node.name
	b.edit(plan.Boot, "/meta-data", "set local-hostname to "+name, 0o644, func(old []byte) ([]byte, error) {
		out := setTopKey(old, "local-hostname", name)
		if !hasTopKey(out, "instance-id") {
			out = setTopKey(out, "instance-id", "imgbake-"+name)
		}
		return out, nil
	})
	b.edit(plan.Boot, "/user-data", "set hostname to "+name, 0o644, func(old []byte) ([]byte, error) {
		return editUserData(old, name), nil
	})
	s, _ := b.static() // checked by network
	if s != nil {
		b.edit(plan.Boot, "/network-config", "static address "+s.addr.String(), 0o644, func(old []byte) ([]byte, error) {
			return editNetworkConfig(old, s)
		})
	}
}

// editUserData sets hostname (and keeps cloud-init from overriding it) in a
// #cloud-config user-data, line by line so the user's content and comments
// stay as they were. Other user-data (a script) is left alone: meta-data's
// local-hostname then names the node.
func editUserData(old []byte, name string) []byte {
	if old == nil || len(bytes.TrimSpace(old)) == 0 {
		return []byte("#cloud-config\nhostname: " + name + "\npreserve_hostname: false\n")
	}
	if !bytes.HasPrefix(old, []byte("#cloud-config")) {
		return old
	}
	out := setTopKey(old, "hostname", name)
	out = setTopKey(out, "preserve_hostname", "false")
	if hasTopKey(out, "fqdn") {
		out = setTopKey(out, "fqdn", name)
	}
	return out
}

// setTopKey replaces a top-level "key: value" line (with no nested block
// below it) or appends one.
func setTopKey(old []byte, key, value string) []byte {
	lines := strings.SplitAfter(string(old), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, key+":") {
			lines[i] = key + ": " + value + "\n"
			// Drop an indented block that belonged to the old value.
			for j := i + 1; j < len(lines) && (strings.HasPrefix(lines[j], " ") || strings.HasPrefix(lines[j], "\t")); j++ {
				lines[j] = ""
			}
			return []byte(strings.Join(lines, ""))
		}
	}
	s := string(old)
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return []byte(s + key + ": " + value + "\n")
}

func hasTopKey(data []byte, key string) bool {
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, key+":") {
			return true
		}
	}
	return false
}

// editNetworkConfig puts the static wired configuration into a cloud-init
// network-config (version 2), keeping other interfaces (Wi-Fi) the user set
// up. Wired interfaces the seed already had are replaced, since they would
// compete for the same device.
func editNetworkConfig(old []byte, s *static) ([]byte, error) {
	doc := map[string]any{}
	if len(bytes.TrimSpace(old)) > 0 {
		if err := yaml.Unmarshal(old, &doc); err != nil {
			return nil, fmt.Errorf("reading network-config: %w; fix or remove it on the boot partition", err)
		}
		if doc == nil {
			doc = map[string]any{}
		}
	}
	net := doc
	if inner, ok := doc["network"].(map[string]any); ok {
		net = inner
	} else if _, ok := doc["version"]; !ok {
		net = map[string]any{}
		doc["network"] = net
	}
	if v, ok := net["version"]; ok && fmt.Sprint(v) != "2" {
		return nil, fmt.Errorf("network-config is version %v; imgbake writes only version 2: remove it from the boot partition to use imgbake's static address", v)
	}
	net["version"] = 2
	net["ethernets"] = map[string]any{"imgbake-wired": s.ethernet()}
	out, err := marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("writing network-config: %w", err)
	}
	return append([]byte("# Written by imgbake: static wired address; other settings kept.\n"), out...), nil
}
