package profiles

import (
	"fmt"
	"sort"

	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/internal/k3s"
)

// CheckK3sKeys checks the profile's k3s: keys against the flags of the
// pinned k3s version's server (role server) or agent: an unknown key is an
// error with the profile file's line and a did-you-mean.
func (p *Profile) CheckK3sKeys(t *k3s.FlagTable) error {
	d := config.NewDoc(p.Origin)
	if p.doc != nil {
		d = p.doc.Fresh()
	}
	server := p.Role == Server
	keys := make([]string, 0, len(p.K3s))
	for k := range p.K3s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if t.Has(server, k) {
			continue
		}
		f := "k3s." + k
		if !server && t.ServerOnly(k) {
			d.Errorf(f, "%s is a k3s %s server flag; an agent (role: agent) does not accept it", k, t.Minor)
			continue
		}
		msg := fmt.Sprintf("%q is not a flag of k3s %s %s", k, t.Minor, map[bool]string{true: "server", false: "agent"}[server])
		if s := config.Suggest(k, t.Names(server)); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		d.Errorf(f, "%s; if your k3s build has it, add k3s-extra-keys: allow to the cluster file", msg)
	}
	return d.Err()
}
