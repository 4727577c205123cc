package firstboot

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"

	"strconv"

	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/config"
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
	settings := b.settings()
	b.edit(plan.Boot, "/user-data", "set hostname to "+name+cloudSettingsDesc(settings), 0o644, func(old []byte) ([]byte, error) {
		return cloudSettings(editUserData(old, name), settings)
	})
	s, _ := b.static() // checked by network
	if s != nil && !b.wifiStatic() {
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
	fresh := []byte("#cloud-config\nhostname: " + name + "\npreserve_hostname: false\n")
	var doc yaml.Node
	parsed := yaml.Unmarshal(old, &doc) == nil
	if parsed {
		if len(doc.Content) != 1 || doc.Content[0].Tag == "!!null" {
			return fresh // nothing but comments
		}
		if doc.Content[0].Kind != yaml.MappingNode {
			return old // not a cloud-config mapping: meta-data's local-hostname names the node
		}
	}
	out := setTopKey(old, "hostname", name)
	out = setTopKey(out, "preserve_hostname", "false")
	if hasTopKey(out, "fqdn") {
		out = setTopKey(out, "fqdn", name)
	}
	if !parsed || hostnameSet(old, out, name) {
		return out
	}
	// YAML the line edit cannot handle (an indented mapping, flow style):
	// edit the parsed document instead, which keeps the values but not the
	// layout.
	str := func(v, tag string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: v} }
	top := doc.Content[0]
	setMapKey(top, "hostname", str(name, "!!str"))
	setMapKey(top, "preserve_hostname", str("false", "!!bool"))
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "fqdn" {
			top.Content[i+1] = str(name, "!!str")
		}
	}
	edited, err := marshal(&doc)
	if err != nil {
		return old
	}
	if !bytes.HasPrefix(edited, []byte("#cloud-config")) {
		edited = append([]byte("#cloud-config\n"), edited...)
	}
	if !hostnameSet(old, edited, name) {
		return old // YAML too exotic to edit safely: meta-data's local-hostname names the node
	}
	return edited
}

// hostnameSet reports whether the edited user-data parses with hostname
// name, preserve_hostname false and every other top-level key of old as
// it was.
func hostnameSet(old, out []byte, name string) bool {
	var before, after map[any]any
	if yaml.Unmarshal(old, &before) != nil || yaml.Unmarshal(out, &after) != nil || after["hostname"] != name || after["preserve_hostname"] != false {
		return false
	}
	for k, v := range before {
		if k != "hostname" && k != "preserve_hostname" && k != "fqdn" && !reflect.DeepEqual(after[k], v) {
			return false
		}
	}
	return true
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
	} else if !isNetworkV2(doc) {
		net = map[string]any{}
		doc["network"] = net
	}
	if v, ok := net["version"]; ok && fmt.Sprint(v) != "2" {
		return nil, fmt.Errorf("network-config is version %v; imgbake writes only version 2: remove it from the boot partition to use imgbake's static address", v)
	}
	net["version"] = 2
	net["ethernets"] = map[string]any{"imgbake-wired": s.ethernet()}
	out, err := marshal(doc)
	if err == nil {
		// Keys the YAML encoder cannot write back faithfully (exotic
		// block-scalar keys) must not become a file cloud-init rejects.
		var check map[string]any
		err = yaml.Unmarshal(out, &check)
	}
	if err != nil {
		return nil, fmt.Errorf("writing network-config: %w; fix or remove network-config on the boot partition", err)
	}
	return append([]byte("# Written by imgbake: static wired address; other settings kept.\n"), out...), nil
}

// isNetworkV2 reports whether doc is itself a network configuration (not
// wrapped in network:): it has a version or any of the device sections.
func isNetworkV2(doc map[string]any) bool {
	for _, k := range []string{"version", "ethernets", "wifis", "bonds", "bridges", "vlans"} {
		if _, ok := doc[k]; ok {
			return true
		}
	}
	return false
}

// cloudSettingsDesc says what cloudSettings changes, for the manifest.
func cloudSettingsDesc(s config.Settings) string {
	var parts []string
	if s.User != nil {
		parts = append(parts, "user "+s.User.Name)
	}
	for _, kv := range [][2]string{{"timezone", s.Timezone}, {"locale", s.Locale}, {"keyboard", s.Keyboard}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+" "+kv[1])
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "; " + strings.Join(parts, ", ")
}

// cloudSettings sets the first-boot settings in a #cloud-config user-data
// the way cloud-init reads them (timezone, locale, keyboard, users), so
// that cloud-init applies the same ones as the rest of the image. The
// user's entry is merged into the users: the user-data already has (the
// others are kept); it holds no password hash, which the FAT must never
// carry: the first-boot unit sets the password after cloud-init made the
// account.
func cloudSettings(data []byte, s config.Settings) ([]byte, error) {
	if !bytes.HasPrefix(data, []byte("#cloud-config")) {
		return data, nil
	}
	if s.Timezone != "" {
		data = setTopKey(data, "timezone", s.Timezone)
	}
	if s.Locale != "" {
		name, _ := localeName(s.Locale)
		data = setTopKey(data, "locale", name)
	}
	if s.Keyboard != "" {
		data = setTopKey(data, "keyboard", "{layout: "+s.Keyboard+"}")
	}
	if s.User == nil {
		return data, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("reading user-data: %w; fix it on the boot partition", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("user-data is not a #cloud-config mapping; fix it on the boot partition")
	}
	top := doc.Content[0]
	var users *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "users" {
			users = top.Content[i+1]
		}
	}
	if users == nil || users.Kind != yaml.SequenceNode {
		seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		if users == nil {
			top.Content = append(top.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "users"}, seq)
		} else {
			*users = *seq // "users: default" or empty: ours is the list
		}
		users = seq
		for i := 0; i+1 < len(top.Content); i += 2 {
			if top.Content[i].Value == "users" {
				users = top.Content[i+1]
			}
		}
	}
	entry := cloudUser(s)
	var found *yaml.Node
	for _, u := range users.Content {
		if u.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(u.Content); i += 2 {
				if u.Content[i].Value == "name" && u.Content[i+1].Value == s.User.Name {
					found = u
				}
			}
		}
	}
	if found == nil {
		found = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		users.Content = append(users.Content, found)
	}
	for _, kv := range entry {
		setMapKey(found, kv.key, kv.value)
	}
	out, err := marshal(&doc)
	if err != nil {
		return nil, fmt.Errorf("writing user-data: %w", err)
	}
	if !bytes.HasPrefix(out, []byte("#cloud-config")) {
		out = append([]byte("#cloud-config\n"), out...)
	}
	return out, nil
}

type keyValue struct {
	key   string
	value *yaml.Node
}

// cloudUser is the cloud-init users: entry of the login user (no secret).
func cloudUser(s config.Settings) []keyValue {
	str := func(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }
	u := s.User
	kv := []keyValue{{"name", str(u.Name)}, {"shell", str("/bin/bash")}}
	if u.Sudo != "no" {
		kv = append(kv, keyValue{"groups", str("sudo")})
	}
	if u.Sudo == "nopasswd" || u.Sudo == "yes" && s.PasswordHash == "" {
		kv = append(kv, keyValue{"sudo", str("ALL=(ALL) NOPASSWD:ALL")})
	}
	// The password is set by imgbake's first-boot unit; cloud-init must
	// not lock it.
	kv = append(kv, keyValue{"lock_passwd", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(s.PasswordHash == "")}})
	if len(u.AuthorizedKeys) > 0 {
		seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, k := range u.AuthorizedKeys {
			seq.Content = append(seq.Content, str(k))
		}
		kv = append(kv, keyValue{"ssh_authorized_keys", seq})
	}
	return kv
}

// setMapKey sets key in a mapping node, in place or appended.
func setMapKey(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
}
