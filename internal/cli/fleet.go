package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/imgbake/imgbake/image/manifest"
	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/netboot/enroll"
	"github.com/imgbake/imgbake/netboot/node"
	"github.com/imgbake/imgbake/netboot/serve"
	"github.com/spf13/cobra"
)

// enrolledStore is the enrolled-nodes file of cluster c.
func enrolledStore(c *config.Cluster) *enroll.Store {
	return &enroll.Store{Path: c.Path(enroll.DefaultFile)}
}

// addEnrolled adds the nodes of c's enrolled-nodes file to c, as ordinary
// nodes, and warns about those the cluster file overrides.
func (a *App) addEnrolled(c *config.Cluster) error {
	st, err := enrolledStore(c).Load()
	if err != nil {
		return err
	}
	nodes := make([]config.Node, len(st.Nodes))
	for i, r := range st.Nodes {
		nodes[i] = config.Node{Name: r.Name, Profile: r.Profile, Model: r.Model, Netboot: &config.Netboot{Serial: r.Serial, MAC: r.MAC}}
	}
	for _, w := range c.AddEnrolled(nodes) {
		fmt.Fprintf(a.Stderr, "imgbake: warning: %s\n", w)
	}
	return nil
}

// enrollPolicy is c's enroll: section for package enroll; nil without one.
func enrollPolicy(c *config.Cluster) *enroll.Policy {
	e := c.Enroll
	if e == nil {
		return nil
	}
	return &enroll.Policy{Mode: enroll.Mode(e.Mode), Profile: e.Profile, Name: e.EnrollName(), Models: e.Models,
		MaxNodes: e.MaxNodes, CheckName: config.CheckHostname}
}

// nodeNames reports whether a name is one of c's nodes.
func nodeNames(c *config.Cluster) func(string) bool {
	return func(name string) bool { _, _, ok := c.Node(name); return ok }
}

func (a *App) netbootPendingCommand(g *globals) *cobra.Command {
	o := &netbootOptions{}
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pending",
		Short: "List the Pis waiting for approval, and those refused",
		Long: `pending lists the Pis that asked 'imgbake netboot' to boot and are not
nodes: waiting for 'imgbake netboot approve' (enroll: mode: approve), or
refused by the enroll: policy, with the reason. It reads the server's state
directory (pending.json): run it where the server runs (on a self-hosted
server node: ssh root@k1 imgbake netboot pending).`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, store, err := a.netbootSetup(g, o, a.logger(g))
			if err != nil {
				return err
			}
			list, err := enroll.ReadPending(filepath.Join(store.StateDir, enroll.PendingFile))
			if err != nil {
				return err
			}
			st, err := enrolledStore(c).Load()
			if err != nil {
				return err
			}
			var shown []enroll.Pending
			for _, p := range list {
				enrolled := false
				for _, r := range st.Nodes {
					enrolled = enrolled || strings.EqualFold(r.MAC, p.MAC)
				}
				if !enrolled {
					shown = append(shown, p)
				}
			}
			if asJSON {
				return printJSON(a, shown)
			}
			if len(shown) == 0 {
				fmt.Fprintln(a.Stdout, "No Pi is waiting.")
				return nil
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SERIAL\tMAC\tMODEL\tFIRST SEEN\tLAST SEEN\tADDRESS\tSTATUS")
			for _, p := range shown {
				status := "pending: imgbake netboot approve " + p.Key()
				if p.Refused != "" {
					status = "refused: " + p.Refused
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(p.Serial), p.MAC, dash(p.Model),
					p.FirstSeen.Local().Format(time.DateTime), ago(p.LastSeen), dash(p.Address), status)
			}
			return tw.Flush()
		},
	}
	addDiskFlags(cmd.Flags(), o)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func (a *App) netbootApproveCommand(g *globals) *cobra.Command {
	o := &netbootOptions{}
	var name string
	cmd := &cobra.Command{
		Use:   "approve SERIAL|MAC [--name NODE]",
		Short: "Enrol a Pi waiting for approval as a node",
		Long: `approve enrols a Pi listed by 'imgbake netboot pending' as a node, under
--name or the enroll: naming pattern, and records it in imgbake.enrolled.yaml.
The running server picks it up, builds its image and boots it at its next
attempt. Check the serial, MAC, model and address 'pending' shows against
the Pi in front of you: the node image holds the cluster's join token.`,
		Example: `  imgbake netboot pending
  imgbake netboot approve 1234abcd --name k7`,
		Args: exactArgs(1, "the serial (or MAC) of the Pi to approve"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, store, err := a.netbootSetup(g, o, a.logger(g))
			if err != nil {
				return err
			}
			p := enrollPolicy(c)
			if p == nil {
				return fmt.Errorf("%s has no enroll: policy; add one (enroll: {mode: approve, profile: worker}) or list the Pi under nodes: in the cluster file", c.File)
			}
			if name != "" {
				if err := config.CheckHostname(name); err != nil {
					return usagef("--name: %v", err)
				}
			}
			r, err := enroll.Approve(p, enrolledStore(c), filepath.Join(store.StateDir, enroll.PendingFile), args[0], name, nodeNames(c), time.Now())
			if err != nil {
				return fmt.Errorf("approving %s: %w", args[0], err)
			}
			fmt.Fprintf(a.Stdout, "%s: enrolled (serial %s, mac %s, model %s, profile %s) in %s; the server builds its image and boots it at its next attempt.\n",
				r.Name, dash(r.Serial), r.MAC, dash(r.Model), r.Profile, enrolledStore(c).Path)
			return nil
		},
	}
	addDiskFlags(cmd.Flags(), o)
	cmd.Flags().StringVar(&name, "name", "", "the node's name (default: from the enroll: naming pattern)")
	return cmd
}

// nodeRow is one line of `imgbake netboot status`.
type nodeRow struct {
	Name       string    `json:"name"`
	Serial     string    `json:"serial,omitempty"`
	MAC        string    `json:"mac,omitempty"`
	Model      string    `json:"model,omitempty"`
	Profile    string    `json:"profile,omitempty"`
	Enrolled   bool      `json:"enrolled"`
	K3s        string    `json:"k3s_version,omitempty"`
	ImageBuilt time.Time `json:"image_built,omitempty"`
	State      string    `json:"state"`
	Address    string    `json:"address,omitempty"`
	LastWrite  time.Time `json:"last_write,omitempty"`
	// LastIO is the node's last disk request (read or write) the server
	// saw, to about 10 s.
	LastIO time.Time `json:"last_io,omitempty"`
	Error  string    `json:"error,omitempty"`
}

func (a *App) netbootStatusCommand(g *globals) *cobra.Command {
	o := &netbootOptions{}
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the network-booted nodes: image, state, address",
		Long: `status shows each network-booted node: serial/MAC, model, profile, its
image (k3s version, age), its state as the server last saw it (enrolled,
building, booting, attached, idle; pending Pis too) and address, and its
last disk I/O (a read or write the server saw, or the disk's last write). It reads the cluster file, the images and the
server's state directory (status.json, written by the running server every
second while something changes): run it where the server runs; for a
self-hosted server node, ssh root@k1 imgbake netboot status.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, nodes, store, err := a.netbootSetup(g, o, a.logger(g))
			if err != nil {
				return err
			}
			status, _, err := serve.ReadStatus(store.StateDir)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			enrolled, err := enrolledStore(c).Load()
			if err != nil {
				return err
			}
			var rows []nodeRow
			for _, n := range nodes {
				cn, _, _ := c.Node(n.Name)
				row := nodeRow{Name: n.Name, Serial: string(n.Serial), MAC: n.MAC.String(), Model: cn.Model, Profile: cn.Profile, State: "no image"}
				_, row.Enrolled = enrolled.Find(n.Name)
				if m, err := manifest.Load(store.ImagePath(n.Name) + ".manifest.json"); err == nil {
					row.K3s = m.Meta["k3s_version"]
					row.State = "not booted"
				}
				if fi, err := os.Stat(store.ImagePath(n.Name)); err == nil {
					row.ImageBuilt = fi.ModTime().UTC()
				}
				if fi, err := os.Stat(store.DiskPath(n.Name)); err == nil {
					row.LastWrite = fi.ModTime().UTC()
				}
				if s, ok := status[n.Name]; ok {
					row.State, row.Address, row.Error, row.LastIO = s.State, s.Address, s.Error, s.LastIO
				}
				rows = append(rows, row)
			}
			pending, _ := enroll.ReadPending(filepath.Join(store.StateDir, enroll.PendingFile))
			for _, p := range pending {
				if _, ok := enrolledByMAC(enrolled, p.MAC); ok {
					continue
				}
				row := nodeRow{Serial: p.Serial, MAC: p.MAC, Model: p.Model, State: "pending", Address: p.Address}
				if p.Refused != "" {
					row.State, row.Error = "refused", p.Refused
				}
				rows = append(rows, row)
			}
			if asJSON {
				return printJSON(a, rows)
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tSERIAL\tMAC\tMODEL\tPROFILE\tIMAGE\tSTATE\tADDRESS\tLAST I/O")
			for _, r := range rows {
				img := "-"
				if !r.ImageBuilt.IsZero() {
					img = dash(r.K3s) + ", " + ago(r.ImageBuilt)
				}
				state := r.State
				if r.Error != "" {
					state += ": " + r.Error
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(r.Name), dash(r.Serial), dash(r.MAC), dash(r.Model), dash(r.Profile),
					img, state, dash(r.Address), ago(latest(r.LastIO, r.LastWrite)))
			}
			return tw.Flush()
		},
	}
	addDiskFlags(cmd.Flags(), o)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func enrolledByMAC(st *enroll.State, mac string) (*enroll.Record, bool) {
	for i := range st.Nodes {
		if strings.EqualFold(st.Nodes[i].MAC, mac) {
			return &st.Nodes[i], true
		}
	}
	return nil, false
}

func printJSON(a *App, v any) error {
	enc := json.NewEncoder(a.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ago says how long ago t was, roughly.
func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

// enroller is the Enroller for cluster c, with the server's state dir.
func (a *App) enroller(c *config.Cluster, store *node.Store, log *slog.Logger) *enroll.Enroller {
	return &enroll.Enroller{Policy: enrollPolicy(c), Store: enrolledStore(c), Taken: nodeNames(c),
		PendingPath: filepath.Join(store.StateDir, enroll.PendingFile), Log: log}
}

// reloadEvery is how often the server checks the cluster file and the
// enrolled nodes for changes (SIGHUP reloads at once).
const reloadEvery = 2 * time.Second

// watchCluster reloads the cluster file and the enrolled nodes on SIGHUP
// (systemctl reload) and when either file changes, and hands the new node
// set and enroll policy to the running server. A file that does not load
// is logged and the previous configuration kept.
func (a *App) watchCluster(ctx context.Context, g *globals, o *netbootOptions, s *serve.Server, e *atomic.Pointer[enroll.Enroller], log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	stamp := func() string {
		var b strings.Builder
		for _, p := range []string{g.config, e.Load().Store.Path} {
			if fi, err := os.Stat(p); err == nil {
				fmt.Fprintf(&b, "%s %d %d;", p, fi.ModTime().UnixNano(), fi.Size())
			}
		}
		return b.String()
	}
	last := stamp()
	tick := time.NewTicker(reloadEvery)
	defer tick.Stop()
	for {
		why := ""
		select {
		case <-ctx.Done():
			return
		case <-hup:
			why = "SIGHUP"
		case <-tick.C:
			if st := stamp(); st != last {
				why = "file changed"
			}
		}
		if why == "" {
			continue
		}
		last = stamp()
		c, nodes, store, err := a.netbootSetup(g, o, log)
		if err != nil {
			log.Error("netboot: reloading the cluster file failed; keeping the previous configuration", "reason", why, "err", err)
			continue
		}
		e.Store(a.enroller(c, store, log))
		s.SetNodes(nodes)
		log.Info("netboot: reloaded the cluster file", "reason", why, "nodes", len(nodes))
	}
}

// latest returns the later of two times.
func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
