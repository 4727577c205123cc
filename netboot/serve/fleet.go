package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imgbake/imgbake/internal/tempfile"
	"github.com/imgbake/imgbake/netboot"
	"github.com/imgbake/imgbake/netboot/dhcp"
	"github.com/imgbake/imgbake/netboot/enroll"
)

// StatusFile is the server's view of its nodes, in the state directory:
// what `imgbake netboot status` reads.
const StatusFile = "status.json"

// buildWait is how long a TFTP request waits for a node's image being
// built before it is answered "not found". A Pi 4/5 bootloader waits
// TFTP_FILE_TIMEOUT (30 s by default) per file; an unanswered boot
// attempt starts again (BOOT_ORDER 0xf21: SD card, network, repeat) about
// a minute later, by when the build has usually finished.
const buildWait = 20 * time.Second

// NodeStatus is what the server knows of one node's boots.
type NodeStatus struct {
	Name     string    `json:"name"`
	Serial   string    `json:"serial,omitempty"`
	MAC      string    `json:"mac,omitempty"`
	State    string    `json:"state"` // enrolled, building, booting, attached, idle
	Address  string    `json:"address,omitempty"`
	DHCP     time.Time `json:"dhcp,omitempty"`
	TFTP     time.Time `json:"tftp,omitempty"`
	Files    int       `json:"files_served,omitempty"`
	Attached time.Time `json:"attached,omitempty"`
	Detached time.Time `json:"detached,omitempty"`
	// LastIO is the time of the node's last disk request (to about
	// activityStep).
	LastIO time.Time `json:"last_io,omitempty"`
	Built  time.Time `json:"image_built,omitempty"`
	Error  string    `json:"error,omitempty"`
}

// ReadStatus reads the status file of a state directory.
func ReadStatus(stateDir string) (map[string]NodeStatus, time.Time, error) {
	p := filepath.Join(stateDir, StatusFile)
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("reading the server's status: %w", err)
	}
	var f struct {
		Updated time.Time             `json:"updated"`
		Nodes   map[string]NodeStatus `json:"nodes"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, time.Time{}, fmt.Errorf("reading the server's status %s: %w", p, err)
	}
	return f.Nodes, f.Updated, nil
}

// fleet is the Server's changing state: the node set (replaced on
// reload), builds in progress and each node's status.
type fleet struct {
	mu     sync.Mutex
	nodes  []Node
	builds map[string]chan struct{}
	status map[string]*NodeStatus
	dirty  bool
	// activity is each node's last disk request (nbd.Export.Activity).
	activity map[string]*atomic.Int64
	// buildMu runs one build at a time: each uses every CPU.
	buildMu sync.Mutex
}

// current returns the nodes served now.
func (s *Server) current() []Node {
	s.fleet.mu.Lock()
	defer s.fleet.mu.Unlock()
	if s.fleet.nodes == nil {
		s.fleet.nodes = slices.Clone(s.Nodes)
	}
	return s.fleet.nodes
}

// SetNodes replaces the nodes served, e.g. after the cluster file
// changed. Running nodes keep their NBD connections, even one no longer
// in nodes (it is logged; it is refused at its next connection or boot).
func (s *Server) SetNodes(nodes []Node) {
	old := s.current()
	s.fleet.mu.Lock()
	s.fleet.nodes = slices.Clone(nodes)
	s.fleet.mu.Unlock()
	for _, o := range old {
		i := slices.IndexFunc(nodes, func(n Node) bool { return n.Name == o.Name })
		switch {
		case i < 0:
			s.logger().Warn("netboot: node removed from the cluster; a running connection of it is kept until it ends, it will not boot again", "node", o.Name)
		case !sameID(o, nodes[i]):
			s.logger().Warn("netboot: node's serial or MAC changed in the cluster file; it boots only from the new one", "node", o.Name,
				"serial", nodes[i].Serial, "mac", nodes[i].MAC.String())
		}
	}
	for _, n := range nodes {
		if !slices.ContainsFunc(old, func(o Node) bool { return o.Name == n.Name }) {
			s.logger().Info("netboot: node added", "node", n.Name, "serial", n.Serial, "mac", n.MAC.String())
			s.startPrepare(n.Name)
		}
	}
}

func sameID(a, b Node) bool {
	return a.Serial == b.Serial && a.MAC.String() == b.MAC.String()
}

// enrol asks Enroll about a machine that is not a node, and adds the node
// it becomes.
func (s *Server) enrol(ctx context.Context, m dhcp.Machine) (Node, error) {
	if s.Enroll == nil {
		return Node{}, dhcp.ErrUnknownMachine
	}
	n, err := s.Enroll(ctx, m)
	if err != nil {
		return Node{}, err
	}
	nodes := s.current()
	if i := slices.IndexFunc(nodes, func(o Node) bool { return o.Name == n.Name }); i >= 0 {
		if !sameID(nodes[i], n) {
			// Never hand a node another's disk.
			s.logger().Error("netboot: an enrolled Pi has the name of another node; not served", "node", n.Name, "mac", n.MAC.String())
			return Node{}, fmt.Errorf("name %s is another node's", n.Name)
		}
		return nodes[i], nil
	}
	s.SetNodes(append(slices.Clone(nodes), n))
	s.setStatus(n, func(st *NodeStatus) { st.State = "enrolled" })
	return n, nil
}

// startPrepare builds name's image in the background when it has none
// and Prepare is set.
func (s *Server) startPrepare(name string) {
	if s.Prepare == nil || s.ctx == nil {
		return
	}
	if _, err := os.Stat(s.Disks.ImagePath(name)); err == nil {
		return
	}
	s.fleet.mu.Lock()
	if s.fleet.builds == nil {
		s.fleet.builds = map[string]chan struct{}{}
	}
	if _, ok := s.fleet.builds[name]; ok {
		s.fleet.mu.Unlock()
		return
	}
	done := make(chan struct{})
	s.fleet.builds[name] = done
	s.fleet.mu.Unlock()
	n := Node{Name: name}
	s.setStatus(n, func(st *NodeStatus) { st.State = "building" })
	go func() {
		defer func() {
			s.fleet.mu.Lock()
			delete(s.fleet.builds, name)
			s.fleet.mu.Unlock()
			close(done)
		}()
		s.fleet.buildMu.Lock()
		defer s.fleet.buildMu.Unlock()
		start := time.Now()
		s.logger().Info("netboot: building the node's image", "node", name)
		err := s.Prepare(s.ctx, name)
		if err == nil {
			_, _, err = s.Disks.Ensure(s.ctx, name)
		}
		if err != nil {
			if s.ctx.Err() == nil {
				s.logger().Error("netboot: building the node's image", "node", name, "err", err)
				s.setStatus(n, func(st *NodeStatus) { st.State, st.Error = "failed", err.Error() })
			}
			return
		}
		s.logger().Info("netboot: image built and disk ready", "node", name, "took", time.Since(start).Round(100*time.Millisecond))
		s.setStatus(n, func(st *NodeStatus) { st.State, st.Built, st.Error = "ready", time.Now().UTC(), "" })
	}()
}

// waitBuild waits up to buildWait for a build of name in progress.
func (s *Server) waitBuild(ctx context.Context, name string) bool {
	s.fleet.mu.Lock()
	done, ok := s.fleet.builds[name]
	s.fleet.mu.Unlock()
	if !ok {
		return false
	}
	t := time.NewTimer(buildWait)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// setStatus changes n's status; the status file is written by
// writeStatus shortly after.
func (s *Server) setStatus(n Node, f func(*NodeStatus)) {
	s.fleet.mu.Lock()
	defer s.fleet.mu.Unlock()
	if s.fleet.status == nil {
		s.fleet.status = map[string]*NodeStatus{}
	}
	st, ok := s.fleet.status[n.Name]
	if !ok {
		st = &NodeStatus{Name: n.Name, State: "idle"}
		if old, _, err := ReadStatus(s.Disks.StateDir); err == nil {
			if o, ok := old[n.Name]; ok {
				*st = o
			}
		}
		s.fleet.status[n.Name] = st
	}
	if n.Serial != "" {
		st.Serial = string(n.Serial)
	}
	if n.MAC != nil {
		st.MAC = n.MAC.String()
	}
	f(st)
	s.fleet.dirty = true
}

// writeStatus writes the status file every second while it changes.
func (s *Server) writeStatus(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.flushStatus()
			return
		case <-tick.C:
			s.flushStatus()
		}
	}
}

// activityStep is how much newer a node's last disk request must be
// than the recorded one to rewrite the status file: a busy node's disk I/O
// must not turn into a status file write every second.
const activityStep = 10 // seconds

// activityOf returns the counter of name's disk requests.
func (s *Server) activityOf(name string) *atomic.Int64 {
	s.fleet.mu.Lock()
	defer s.fleet.mu.Unlock()
	if s.fleet.activity == nil {
		s.fleet.activity = map[string]*atomic.Int64{}
	}
	a, ok := s.fleet.activity[name]
	if !ok {
		a = &atomic.Int64{}
		s.fleet.activity[name] = a
	}
	return a
}

func (s *Server) flushStatus() {
	s.fleet.mu.Lock()
	for name, a := range s.fleet.activity {
		st, ok := s.fleet.status[name]
		if t := a.Load(); ok && t-st.LastIO.Unix() >= activityStep {
			st.LastIO, s.fleet.dirty = time.Unix(t, 0).UTC(), true
		}
	}
	if !s.fleet.dirty {
		s.fleet.mu.Unlock()
		return
	}
	all, _, _ := ReadStatus(s.Disks.StateDir)
	if all == nil {
		all = map[string]NodeStatus{}
	}
	for k, v := range s.fleet.status {
		all[k] = *v
	}
	s.fleet.dirty = false
	s.fleet.mu.Unlock()
	data, err := json.MarshalIndent(struct {
		Updated time.Time             `json:"updated"`
		Nodes   map[string]NodeStatus `json:"nodes"`
	}{time.Now().UTC(), all}, "", "  ")
	if err == nil {
		err = os.MkdirAll(s.Disks.StateDir, 0o700)
	}
	if err == nil {
		err = tempfile.WriteFile(filepath.Join(s.Disks.StateDir, StatusFile), data, 0o644)
	}
	if err != nil {
		s.logger().Warn("netboot: writing the status file", "err", err)
	}
}

// tftpServed records a boot file served, logging the first of a boot.
func (s *Server) tftpServed(n Node, from netip.Addr, file string) {
	now := time.Now().UTC()
	first := false
	s.setStatus(n, func(st *NodeStatus) {
		if now.Sub(st.TFTP) > time.Minute || st.Address != from.String() {
			first, st.Files = true, 0
		}
		st.TFTP, st.Address = now, from.String()
		st.Files++
		if st.State != "attached" {
			st.State = "booting"
		}
	})
	if first {
		s.logger().Info("netboot: serving the node's boot files", "node", n.Name, "address", from, "file", file)
	}
}

// attached wraps an NBD claim to log and record the node's root disk
// attaching and detaching.
func (s *Server) attached(n Node, from netip.Addr, claim func() (func(), error)) func() (func(), error) {
	return func() (func(), error) {
		release, err := claim()
		if err != nil {
			return nil, err
		}
		s.logger().Info("netboot: root disk attached", "node", n.Name, "address", from)
		s.setStatus(n, func(st *NodeStatus) { st.State, st.Attached, st.Address = "attached", time.Now().UTC(), from.String() })
		return func() {
			release()
			s.logger().Info("netboot: root disk detached", "node", n.Name, "address", from)
			s.setStatus(n, func(st *NodeStatus) { st.State, st.Detached = "idle", time.Now().UTC() })
		}, nil
	}
}

// EnrollWith adapts the enroll.Enroller that get returns (the current
// one: the policy changes when the cluster file does) to Server.Enroll.
func EnrollWith(get func() *enroll.Enroller) func(ctx context.Context, m dhcp.Machine) (Node, error) {
	return func(_ context.Context, m dhcp.Machine) (Node, error) {
		e := get()
		if e == nil {
			return Node{}, enroll.ErrNotEnrolled
		}
		r, err := e.Lookup(enroll.Machine{MAC: m.MAC, Serial: m.Serial, Revision: m.BoardRevision}, m.Address)
		if err != nil {
			return Node{}, err
		}
		return RecordNode(r), nil
	}
}

// RecordNode is the Node an enrolled record boots as: only from the serial
// and MAC it enrolled with.
func RecordNode(r enroll.Record) Node {
	n := Node{Name: r.Name, Serial: netboot.Serial(r.Serial)}
	n.MAC, _ = net.ParseMAC(r.MAC)
	return n
}
