package cli

import (
	"fmt"
	"time"

	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/internal/k3s"
	"github.com/imgbake/imgbake/internal/progress"
	"github.com/imgbake/imgbake/profiles"
)

// checkCluster checks what spans the whole cluster file before anything is
// baked: the server node's address against server: (with every listed
// node's profile), and warns once when the pinned k3s is out of support.
func (a *App) checkCluster(c *config.Cluster, o *buildOptions) error {
	dir := a.profilesDir(c, o)
	loaded := map[string]*profiles.Profile{}
	starts := func(n config.Node) bool {
		name := n.Profile
		if name == "" {
			return false
		}
		p, ok := loaded[name]
		if !ok {
			p, _ = profiles.Load(name, dir) // a bad profile is reported when its node is built
			loaded[name] = p
		}
		return p != nil && p.Role == profiles.Server && !p.Join
	}
	if err := c.CheckServerAddress(starts); err != nil {
		return err
	}
	if w := k3s.SupportWarning(c.K3s.Version, time.Now()); w != "" {
		fmt.Fprintf(a.Stderr, "imgbake: warning: %s:%d: %s\n", c.File, c.Line("k3s.version"), w)
	}
	return nil
}

// checkSize refuses a --size below the base image's size: an image is
// never shrunk.
func checkSize(flag string, size, base int64) error {
	if size == 0 || size >= base {
		return nil
	}
	gib := float64(base) / (1 << 30)
	return usagef("--size %s (%s) is smaller than the base image (%s): imgbake grows images, never shrinks them; give at least --size %.1fG, or leave --size out", flag, progress.Bytes(size), progress.Bytes(base), float64(int(gib*10)+1)/10)
}
