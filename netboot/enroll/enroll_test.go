package enroll

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	ifixture "github.com/imgbake/imgbake/internal/fixture"
	"github.com/imgbake/imgbake/internal/testlog"
	"github.com/imgbake/imgbake/netboot"
)

func TestDecodeRevision(t *testing.T) {
	for _, tc := range []struct {
		rev   uint32
		model string
		armv6 bool
		mem   int
	}{
		{0xc03111, "pi4", false, 4096},
		{0xd03115, "pi4", false, 8192},
		{0xc03130, "pi400", false, 4096},
		{0xb03140, "cm4", false, 2048},
		{0xc04170, "pi5", false, 4096},
		{0xd04190, "pi500", false, 8192},
		{0xc041a0, "cm5", false, 4096},
		{0xa020d3, "pi3+", false, 1024},
		{0xa02082, "pi3", false, 1024},
		{0x902120, "pi02w", false, 512},
		{0xa01041, "pi2", false, 1024},
		{0x9000c1, "pi0w", true, 512},
		{0x900093, "pi0", true, 512},
		{0x900032, "pi1", true, 512},
		{0x000e, "pi1", true, 0},
		{0x0014, "cm1", true, 0},
	} {
		b, err := DecodeRevision(tc.rev)
		if err != nil {
			t.Errorf("%#x: %v", tc.rev, err)
			continue
		}
		if b.Model != tc.model || b.ARMv6 != tc.armv6 || b.MemoryMB != tc.mem {
			t.Errorf("%#x: got %+v, want %s armv6=%v %d MB", tc.rev, b, tc.model, tc.armv6, tc.mem)
		}
	}
	for _, rev := range []uint32{0, 0x1, 0x16, 0xc03ff0} {
		if b, err := DecodeRevision(rev); err == nil {
			t.Errorf("%#x: got %+v, want an error", rev, b)
		}
	}
}

func TestCheckPattern(t *testing.T) {
	for _, ok := range []string{"worker-{n}", "w{serial}", "pi-{mac}", "{n}"} {
		if err := CheckPattern(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"worker", "w{id}", "{N}"} {
		if err := CheckPattern(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func mac(i int) net.HardwareAddr { return net.HardwareAddr{0xdc, 0xa6, 0x32, 0, 0, byte(i)} }

func pi4(i int) Machine {
	return Machine{MAC: mac(i), Serial: netboot.Serial(fmt.Sprintf("1000%04x", i)), Revision: 0xc03111}
}

type fixture struct {
	e     *Enroller
	store *Store
	dir   string
	clock time.Time
	log   *testlog.Buffer
}

func newFixture(t *testing.T, p *Policy) *fixture {
	dir := t.TempDir()
	f := &fixture{dir: dir, store: &Store{Path: filepath.Join(dir, DefaultFile)}, clock: time.Date(2026, 12, 4, 19, 0, 0, 0, time.UTC), log: &testlog.Buffer{}}
	f.e = &Enroller{Policy: p, Store: f.store, PendingPath: filepath.Join(dir, "state", PendingFile), Log: slog.New(slog.NewTextHandler(f.log, nil)),
		Taken: func(n string) bool { return n == "k1" || n == "worker-2" }, Now: func() time.Time { return f.clock }}
	os.MkdirAll(filepath.Join(dir, "state"), 0o755)
	return f
}

func TestAutoNaming(t *testing.T) {
	f := newFixture(t, &Policy{Mode: ModeAuto, Profile: "worker", Name: "worker-{n}"})
	var names []string
	for i := 1; i <= 3; i++ {
		r, err := f.e.Lookup(pi4(i), netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, r.Name)
	}
	// worker-2 is a node of the cluster file: skipped.
	if diff := cmp.Diff([]string{"worker-1", "worker-3", "worker-4"}, names); diff != "" {
		t.Error(diff)
	}
	// The same Pi again is the same node, from a fresh Enroller (a
	// restarted server) too.
	f2 := newFixture(t, f.e.Policy)
	f2.e.Store = f.store
	r, err := f2.e.Lookup(pi4(2), netip.Addr{})
	if err != nil || r.Name != "worker-3" {
		t.Errorf("second boot of pi 2: %+v %v", r, err)
	}
	st, _ := f.store.Load()
	if st.Next != 5 || len(st.Nodes) != 3 || st.Nodes[0].Model != "pi4" || st.Nodes[0].Revision != "c03111" || st.Nodes[0].By != "auto" {
		t.Errorf("state %+v", st)
	}
	// A removed node's name is never given again.
	f.store.Update(func(st *State) error {
		st.Retired = append(st.Retired, st.Nodes[2].Name)
		st.Nodes = st.Nodes[:2]
		return nil
	})
	r, err = f.e.Lookup(pi4(9), netip.Addr{})
	if err != nil || r.Name != "worker-5" {
		t.Errorf("after removing worker-4: %+v %v", r, err)
	}
}

func TestSerialNaming(t *testing.T) {
	f := newFixture(t, &Policy{Mode: ModeAuto, Profile: "worker", Name: "w{serial}",
		CheckName: func(s string) error {
			if len(s) > 63 {
				return errors.New("too long")
			}
			return nil
		}})
	r, err := f.e.Lookup(pi4(1), netip.Addr{})
	if err != nil || r.Name != "w10000001" {
		t.Fatalf("%+v %v", r, err)
	}
	// A Pi 3B sends no serial: refused with the reason.
	_, err = f.e.Lookup(Machine{MAC: mac(7)}, netip.Addr{})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "needs a serial") {
		t.Errorf("pi 3: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	f := newFixture(t, &Policy{Mode: ModeAuto, Profile: "worker", Name: "worker-{n}", Models: []string{"pi4", "pi5"}, MaxNodes: 2})
	zero := Machine{MAC: mac(20), Serial: "20202020", Revision: 0x9000c1}
	_, err := f.e.Lookup(zero, netip.Addr{})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "ARMv6") {
		t.Errorf("zero w: %v", err)
	}
	pi3 := Machine{MAC: mac(21)}
	if _, err := f.e.Lookup(pi3, netip.Addr{}); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "not in enroll.models") {
		t.Errorf("pi 3: %v", err)
	}
	for i := 1; i <= 2; i++ {
		if _, err := f.e.Lookup(pi4(i), netip.Addr{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.e.Lookup(pi4(3), netip.Addr{}); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "max-nodes 2") {
		t.Errorf("third: %v", err)
	}
	// Enrolled nodes still boot at the limit.
	if _, err := f.e.Lookup(pi4(2), netip.Addr{}); err != nil {
		t.Error(err)
	}
	list, err := ReadPending(f.e.PendingPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("pending %+v", list)
	}
	for _, p := range list {
		if p.Refused == "" {
			t.Errorf("%s not listed as refused", p.Key())
		}
	}
	// One log line per boot attempt, not per packet.
	n := strings.Count(f.log.String(), "not answering a Pi")
	f.e.Lookup(zero, netip.Addr{})
	f.e.Lookup(zero, netip.Addr{})
	if got := strings.Count(f.log.String(), "not answering a Pi"); got != n {
		t.Errorf("repeated requests in one attempt logged %d more lines", got-n)
	}
	f.clock = f.clock.Add(time.Minute)
	f.e.Lookup(zero, netip.Addr{})
	if got := strings.Count(f.log.String(), "not answering a Pi"); got != n+1 {
		t.Errorf("a new attempt logged %d lines, want 1", got-n)
	}
}

func TestConflicts(t *testing.T) {
	f := newFixture(t, &Policy{Mode: ModeAuto, Profile: "worker", Name: "worker-{n}"})
	r, err := f.e.Lookup(pi4(1), netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	// The same serial from another MAC: refused, never the node's disk.
	fake := pi4(1)
	fake.MAC = mac(99)
	if got, err := f.e.Lookup(fake, netip.Addr{}); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "impersonation") {
		t.Errorf("serial from another MAC: %+v %v", got, err)
	}
	// The same MAC with another serial: refused too.
	fake = pi4(1)
	fake.Serial = "deadbeef"
	if got, err := f.e.Lookup(fake, netip.Addr{}); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "impersonation") {
		t.Errorf("MAC with another serial: %+v %v", got, err)
	}
	st, _ := f.store.Load()
	if len(st.Nodes) != 1 || st.Nodes[0].Name != r.Name {
		t.Errorf("state after conflicts: %+v", st.Nodes)
	}
	if !strings.Contains(f.log.String(), "level=WARN") {
		t.Errorf("conflicts not logged:\n%s", f.log.String())
	}
}

func TestApproveFlow(t *testing.T) {
	p := &Policy{Mode: ModeApprove, Profile: "worker", Name: "worker-{n}"}
	f := newFixture(t, p)
	a, b := pi4(1), pi4(2)
	addr := netip.MustParseAddr("192.168.1.35")
	for _, m := range []Machine{a, b} {
		if _, err := f.e.Lookup(m, addr); !errors.Is(err, ErrPending) {
			t.Fatalf("%s: %v, want pending", m.Key(), err)
		}
	}
	list, err := ReadPending(f.e.PendingPath)
	if err != nil || len(list) != 2 {
		t.Fatalf("pending %+v %v", list, err)
	}
	want := Pending{Serial: "10000001", MAC: "dc:a6:32:00:00:01", Model: "pi4", Revision: "c03111", Address: "192.168.1.35",
		FirstSeen: f.clock, LastSeen: f.clock, Attempts: 1}
	if diff := cmp.Diff(want, list[0]); diff != "" {
		t.Error(diff)
	}
	// Approving a name already used, an unknown Pi: refused.
	if _, err := Approve(p, f.store, f.e.PendingPath, a.Key(), "k1", f.e.Taken, f.clock); err == nil {
		t.Error("approve --name k1 (a node of the cluster file): no error")
	}
	if _, err := Approve(p, f.store, f.e.PendingPath, "cafecafe", "", f.e.Taken, f.clock); err == nil {
		t.Error("approve of a Pi that never asked: no error")
	}
	r, err := Approve(p, f.store, f.e.PendingPath, a.Key(), "k7", f.e.Taken, f.clock)
	if err != nil || r.Name != "k7" || r.By != "approve" {
		t.Fatalf("approve: %+v %v", r, err)
	}
	if _, err := Approve(p, f.store, f.e.PendingPath, a.Key(), "k8", f.e.Taken, f.clock); err == nil {
		t.Error("approving twice: no error")
	}
	// The server sees a as k7 at its next attempt; b stays pending.
	if got, err := f.e.Lookup(a, addr); err != nil || got.Name != "k7" {
		t.Errorf("a after approval: %+v %v", got, err)
	}
	if _, err := f.e.Lookup(b, addr); !errors.Is(err, ErrPending) {
		t.Errorf("b: %v", err)
	}
	list, _ = ReadPending(f.e.PendingPath)
	if len(list) != 1 || list[0].Serial != string(b.Serial) {
		t.Errorf("pending after approval: %+v", list)
	}
	r, err = Approve(p, f.store, f.e.PendingPath, b.MAC.String(), "", f.e.Taken, f.clock)
	if err != nil || r.Name != "worker-1" {
		t.Errorf("approve by MAC with the pattern: %+v %v", r, err)
	}
}

// TestConcurrentWriters: the server and `netboot approve` both write the
// file; the lock keeps every enrollment.
func TestConcurrentWriters(t *testing.T) {
	f := newFixture(t, &Policy{Mode: ModeAuto, Profile: "worker", Name: "worker-{n}"})
	var wg sync.WaitGroup
	for i := 1; i <= 20; i++ {
		wg.Add(1)
		e := &Enroller{Policy: f.e.Policy, Store: &Store{Path: f.store.Path}}
		go func() {
			defer wg.Done()
			if _, err := e.Lookup(pi4(i), netip.Addr{}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	st, err := f.store.Load()
	if err != nil || len(st.Nodes) != 20 {
		t.Fatalf("%d nodes, %v", len(st.Nodes), err)
	}
	seen := map[string]bool{}
	for _, r := range st.Nodes {
		if seen[r.Name] {
			t.Errorf("name %s given twice", r.Name)
		}
		seen[r.Name] = true
	}
}

// TestFullDisk: an enrollment that cannot be written is not served, and
// the file keeps its earlier content.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mounting a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	store := &Store{Path: filepath.Join(dir, DefaultFile)}
	e := &Enroller{Policy: &Policy{Mode: ModeAuto, Profile: "worker", Name: "worker-{n}"}, Store: store}
	if _, err := e.Lookup(pi4(1), netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(store.Path)
	fill, _ := os.Create(filepath.Join(dir, "fill"))
	fill.Write(make([]byte, 128<<10))
	fill.Close()
	r, err := e.Lookup(pi4(2), netip.Addr{})
	if err == nil || errors.Is(err, ErrRefused) {
		t.Fatalf("enrolled %+v on a full disk (err %v)", r, err)
	}
	after, _ := os.ReadFile(store.Path)
	if string(before) != string(after) {
		t.Error("the enrolled file changed on a failed write")
	}
	ents, _ := os.ReadDir(dir)
	for _, en := range ents {
		if strings.Contains(en.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", en.Name())
		}
	}
	// Once there is room, it enrols.
	os.Remove(filepath.Join(dir, "fill"))
	if r, err := e.Lookup(pi4(2), netip.Addr{}); err != nil || r.Name != "worker-2" {
		t.Errorf("after freeing space: %+v %v", r, err)
	}
}

func TestBadFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, DefaultFile)
	os.WriteFile(p, []byte("nodes: [{name: a, profile: worker, mac: \"dc:a6:32:00:00:01\"}, {name: a, profile: worker, mac: \"dc:a6:32:00:00:02\"}]\n"), 0o644)
	if _, err := (&Store{Path: p}).Load(); err == nil || !strings.Contains(err.Error(), "enrolled twice") {
		t.Errorf("duplicate name: %v", err)
	}
	os.WriteFile(p, []byte("nodez: []\n"), 0o644)
	if _, err := (&Store{Path: p}).Load(); err == nil {
		t.Error("unknown field: no error")
	}
}

// TestStaleEnrolledTemps: a copy of the enrolled-nodes file that a killed
// imgbake was writing is removed when the file is next read; a running
// imgbake's stays.
func TestStaleEnrolledTemps(t *testing.T) {
	dir := t.TempDir()
	store := &Store{Path: filepath.Join(dir, DefaultFile)}
	stale, live := ifixture.LeftTemps(t, store.Path, []byte("nodes:\n"))
	if _, err := store.Load(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("a killed imgbake's copy of the enrolled nodes was kept")
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a running imgbake's copy went: %v", err)
	}
}
