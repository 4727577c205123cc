package serve

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgbake/imgbake/internal/fixture"
	"github.com/imgbake/imgbake/internal/testlog"
	"github.com/imgbake/imgbake/netboot/binding"
	"github.com/imgbake/imgbake/netboot/dhcp"
	"github.com/imgbake/imgbake/netboot/enroll"
	"github.com/imgbake/imgbake/netboot/node"

	"log/slog"
)

// TestEnrolAndBuildOnDemand: a Pi that is not a node asks to boot; the
// enroll policy (auto) makes it worker-1, its image is built in the
// background, and its first TFTP request waits for that build and is
// served; its disk is then served over NBD to it only.
func TestEnrolAndBuildOnDemand(t *testing.T) {
	fixture.RequireTools(t)
	fixture.NeedTools(t, "atftp", "qemu-img", "cpio", "xz", "gzip")
	dir := t.TempDir()
	img, _ := nodeImage(t, dir) // out/k5.img: what Prepare "builds"
	store := &node.Store{StateDir: filepath.Join(dir, "state"), ImageDir: filepath.Dir(img), DiskSize: 256 << 20}
	mac, _ := net.ParseMAC(macText)
	log := &testlog.Buffer{}
	e := &enroll.Enroller{
		Log:         slog.New(slog.NewTextHandler(log, nil)),
		Policy:      &enroll.Policy{Mode: enroll.ModeAuto, Profile: "worker", Name: "worker-{n}"},
		Store:       &enroll.Store{Path: filepath.Join(dir, enroll.DefaultFile)},
		PendingPath: filepath.Join(dir, "state", enroll.PendingFile),
	}
	var builds atomic.Int32
	s := &Server{Disks: store, Addr: netip.MustParseAddr("127.0.0.1"),
		Log: slog.New(slog.NewTextHandler(log, nil)),
		Neighbors: binding.NeighborsFunc(func(a netip.Addr) (net.HardwareAddr, bool) {
			return mac, a == netip.MustParseAddr("127.0.0.1")
		}),
		Init:   func(string) ([]byte, error) { return []byte(ourInit), nil },
		Enroll: EnrollWith(func() *enroll.Enroller { return e }),
		Prepare: func(ctx context.Context, name string) error {
			builds.Add(1)
			time.Sleep(2 * time.Second) // longer than atftp's first retry
			return os.Link(img, filepath.Join(filepath.Dir(img), name+".img"))
		},
	}
	r := start(t, s)

	// A Pi 1 is refused: no node, nothing built.
	zero := dhcp.Machine{MAC: net.HardwareAddr{0xb8, 0x27, 0xeb, 0, 0, 9}, Serial: "99999999", Model: "RPi4", BoardRevision: 0x9000c1, PXE: true}
	if n, err := s.lookupMachine(context.Background(), zero); !errors.Is(err, dhcp.ErrUnknownMachine) || !errors.Is(err, enroll.ErrRefused) {
		t.Errorf("Pi Zero W: %v %v", n, err)
	}
	pi := dhcp.Machine{MAC: mac, Serial: serial, Model: "RPi4", BoardRevision: 0xc03111, PXE: true}
	n, err := s.lookupMachine(context.Background(), pi)
	if err != nil || n.Name != "worker-1" {
		t.Fatalf("unknown Pi 4: %v %v", n, err)
	}
	s.dhcpAnswered(pi, n)
	// The first TFTP request waits for the build.
	if got := string(r.mustGet(t, serial+"/config.txt")); !strings.Contains(got, "initramfs") {
		t.Errorf("config.txt = %q", got)
	}
	if builds.Load() != 1 {
		t.Errorf("%d builds, want 1", builds.Load())
	}
	disk := store.DiskPath("worker-1")
	if err := sameAsDiskNamed(t, r, disk, "worker-1"); err != nil {
		t.Fatalf("NBD: %v", err)
	}
	// The same Pi later is the same node; nothing is built again.
	if n, err := s.lookupMachine(context.Background(), pi); err != nil || n.Name != "worker-1" {
		t.Errorf("again: %v %v", n, err)
	}
	s.flushStatus()
	st, _, err := ReadStatus(store.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	w := st["worker-1"]
	if w.Serial != serial || w.MAC != macText || w.Address != "127.0.0.1" || w.Built.IsZero() || w.TFTP.IsZero() || w.DHCP.IsZero() || w.Files == 0 ||
		time.Since(w.LastIO) > time.Minute {
		t.Errorf("status %+v", w)
	}
	for _, line := range []string{"enroll: enrolled a new node", "building the node's image", "image built and disk ready", "serving the node's boot files", "root disk attached"} {
		if !strings.Contains(log.String(), line) {
			t.Errorf("no log line %q", line)
		}
	}

	// Removed from the cluster (a reload without it): not served again.
	s.SetNodes(nil)
	if _, err := r.get(t, serial+"/config.txt"); err == nil {
		t.Error("a removed node's boot files are served")
	}
	if !strings.Contains(log.String(), "node removed from the cluster") {
		t.Error("removal not logged")
	}
}

// TestEnrolNotRecorded: an enrollment that cannot be recorded is not
// served.
func TestEnrolNotRecorded(t *testing.T) {
	dir := t.TempDir()
	e := &enroll.Enroller{
		Policy: &enroll.Policy{Mode: enroll.ModeAuto, Profile: "worker", Name: "worker-{n}"},
		Store:  &enroll.Store{Path: filepath.Join(dir, "missing-dir", enroll.DefaultFile)},
	}
	s := &Server{Disks: &node.Store{StateDir: dir, ImageDir: dir}, Enroll: EnrollWith(func() *enroll.Enroller { return e })}
	mac, _ := net.ParseMAC(macText)
	n, err := s.lookupMachine(context.Background(), dhcp.Machine{MAC: mac, Serial: serial, BoardRevision: 0xc03111, PXE: true})
	if !errors.Is(err, dhcp.ErrUnknownMachine) {
		t.Errorf("got %v %v, want the Pi unanswered", n, err)
	}
	if len(s.current()) != 0 {
		t.Errorf("nodes %v", s.current())
	}
}

// TestStaleStateTemps: a server starting removes the half-written copies of
// status.json and pending.json that a killed server left in the state
// directory, and keeps a running imgbake's.
func TestStaleStateTemps(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	os.MkdirAll(state, 0o700)
	staleStatus, live := fixture.LeftTemps(t, filepath.Join(state, StatusFile), []byte("{"))
	stalePending, _ := fixture.LeftTemps(t, filepath.Join(state, enroll.PendingFile), []byte("["))
	stale := []string{staleStatus, stalePending}
	mac, _ := net.ParseMAC(macText)
	s := &Server{Nodes: []Node{{Name: "k5", Serial: serial, MAC: mac}},
		Disks:     &node.Store{StateDir: state, ImageDir: filepath.Join(dir, "out")},
		Addr:      netip.MustParseAddr("127.0.0.1"),
		Neighbors: binding.NeighborsFunc(func(netip.Addr) (net.HardwareAddr, bool) { return nil, false }),
		Init:      func(string) ([]byte, error) { return []byte(ourInit), nil }}
	start(t, s).stop()
	for _, p := range stale {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s was kept", filepath.Base(p))
		}
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a running imgbake's %s went: %v", filepath.Base(live), err)
	}
}
