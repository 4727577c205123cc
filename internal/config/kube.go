package config

import (
	"fmt"
	"regexp"
	"strings"
)

// RoleLabelPrefix is the label prefix kubelet refuses in --node-labels
// (node-role.kubernetes.io/<role>). imgbake maps it to RoleLabel.
const RoleLabelPrefix = "node-role.kubernetes.io/"

// RoleLabel is the label imgbake gives an agent in place of
// node-role.kubernetes.io/<role>: imgbake.io/role=<role>. A reconciler on the
// server copies it to node-role.kubernetes.io/<role>=true.
const RoleLabel = "imgbake.io/role"

var (
	labelName = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	dnsLabel  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

// CheckLabelKey checks a Kubernetes label key: an optional DNS subdomain
// prefix (at most 253 characters) and "/", then a name of at most 63
// characters of [A-Za-z0-9-_.] that starts and ends alphanumeric.
func CheckLabelKey(key string) error {
	prefix, name, hasPrefix := strings.Cut(key, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	if hasPrefix {
		if err := CheckDNSSubdomain(prefix); err != nil {
			return fmt.Errorf("label key %q: prefix %w", key, err)
		}
	}
	if name == "" {
		return fmt.Errorf("label key %q: the name after the prefix is empty", key)
	}
	if len(name) > 63 {
		return fmt.Errorf("label key %q: the name is %d characters, at most 63 are allowed", key, len(name))
	}
	if !labelName.MatchString(name) {
		return fmt.Errorf("label key %q: the name may hold only letters, digits, '-', '_' and '.', and must start and end with a letter or digit", key)
	}
	return nil
}

// CheckLabelValue checks a Kubernetes label value: empty, or at most 63
// characters of [A-Za-z0-9-_.] that start and end alphanumeric.
func CheckLabelValue(v string) error {
	if v == "" {
		return nil
	}
	if len(v) > 63 {
		return fmt.Errorf("label value %q is %d characters, at most 63 are allowed", v, len(v))
	}
	if !labelName.MatchString(v) {
		return fmt.Errorf("label value %q may hold only letters, digits, '-', '_' and '.', and must start and end with a letter or digit", v)
	}
	return nil
}

// CheckDNSSubdomain checks an RFC 1123 subdomain: lower-case labels joined by
// dots, at most 253 characters.
func CheckDNSSubdomain(s string) error {
	if s == "" || len(s) > 253 {
		return fmt.Errorf("%q must be 1 to 253 characters", s)
	}
	for _, l := range strings.Split(s, ".") {
		if len(l) > 63 || !dnsLabel.MatchString(l) {
			return fmt.Errorf("%q is not a DNS subdomain (lower-case letters, digits, '-' and '.')", s)
		}
	}
	return nil
}

// CheckHostname checks a node name: one RFC 1123 label, lower case, at most
// 63 characters. k3s uses it as the Kubernetes node name.
func CheckHostname(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("the name is empty")
	case len(s) > 63:
		return fmt.Errorf("%q is %d characters, a hostname has at most 63", s, len(s))
	case strings.ToLower(s) != s && dnsLabel.MatchString(strings.ToLower(s)):
		return fmt.Errorf("%q has upper-case letters; Kubernetes node names are lower case: use %q", s, strings.ToLower(s))
	case strings.Contains(s, "."):
		return fmt.Errorf("%q: use the short host name (no dots)", s)
	case !dnsLabel.MatchString(s):
		return fmt.Errorf("%q is not a valid hostname: use lower-case letters, digits and '-', starting and ending with a letter or digit", s)
	}
	return nil
}

// kubeletLabel reports whether kubelet accepts key in --node-labels. Kubelet
// refuses keys in the kubernetes.io and k8s.io namespaces except the ones it
// may set itself (k8s.io/kubernetes/pkg/kubelet/apis/well_known_labels.go).
func kubeletLabel(key string) bool {
	prefix, _, ok := strings.Cut(key, "/")
	if !ok {
		return true
	}
	ns := func(domain string) bool { return prefix == domain || strings.HasSuffix(prefix, "."+domain) }
	if !ns("kubernetes.io") && !ns("k8s.io") {
		return true
	}
	if ns("kubelet.kubernetes.io") || ns("node.kubernetes.io") {
		return true
	}
	switch key {
	case "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os",
		"beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type",
		"beta.kubernetes.io/os", "beta.kubernetes.io/arch",
		"failure-domain.beta.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone",
		"topology.kubernetes.io/region", "topology.kubernetes.io/zone":
		return true
	}
	return false
}

// CheckLabel checks one node label as given to k3s (node-label), including
// kubelet's rule against kubernetes.io labels. A node-role.kubernetes.io/
// label is not an error here: the caller maps it with RoleFromLabel.
func CheckLabel(key, value string) error {
	if err := CheckLabelKey(key); err != nil {
		return err
	}
	if err := CheckLabelValue(value); err != nil {
		return err
	}
	if strings.HasPrefix(key, RoleLabelPrefix) {
		return nil
	}
	if !kubeletLabel(key) {
		return fmt.Errorf("label %q is in the kubernetes.io/k8s.io namespace, which kubelet refuses in --node-labels (it would not start); use your own prefix such as example.com/", key)
	}
	return nil
}

// RoleFromLabel returns <role> for a node-role.kubernetes.io/<role> key.
func RoleFromLabel(key string) (string, bool) {
	if !strings.HasPrefix(key, RoleLabelPrefix) {
		return "", false
	}
	return strings.TrimPrefix(key, RoleLabelPrefix), true
}

// Taint is a node taint: key[=value]:Effect.
type Taint struct {
	Key, Value, Effect string
}

func (t Taint) String() string {
	if t.Value == "" {
		return t.Key + ":" + t.Effect
	}
	return t.Key + "=" + t.Value + ":" + t.Effect
}

// ParseTaint parses key[=value]:Effect with Effect one of NoSchedule,
// PreferNoSchedule and NoExecute.
func ParseTaint(s string) (Taint, error) {
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return Taint{}, fmt.Errorf("taint %q: expected key=value:Effect (Effect is NoSchedule, PreferNoSchedule or NoExecute)", s)
	}
	kv, effect := s[:i], s[i+1:]
	effects := []string{"NoSchedule", "PreferNoSchedule", "NoExecute"}
	if effect != effects[0] && effect != effects[1] && effect != effects[2] {
		hint := ""
		for _, e := range effects {
			if strings.EqualFold(e, effect) {
				hint = fmt.Sprintf(" (did you mean %s?)", e)
			}
		}
		return Taint{}, fmt.Errorf("taint %q: effect %q must be NoSchedule, PreferNoSchedule or NoExecute%s", s, effect, hint)
	}
	key, value, _ := strings.Cut(kv, "=")
	if err := CheckLabelKey(key); err != nil {
		return Taint{}, fmt.Errorf("taint %q: %w", s, err)
	}
	if err := CheckLabelValue(value); err != nil {
		return Taint{}, fmt.Errorf("taint %q: %w", s, err)
	}
	return Taint{Key: key, Value: value, Effect: effect}, nil
}
