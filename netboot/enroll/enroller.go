package enroll

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/imgbake/imgbake/internal/tempfile"
)

// PendingFile is the pending list's name in the server's state directory.
const PendingFile = "pending.json"

// maxPending bounds the pending list: the least recently seen Pis go first.
const maxPending = 256

// attemptGap separates boot attempts of one Pi: requests closer together
// belong to one attempt, which is logged once.
const attemptGap = 30 * time.Second

// Pending is a Pi that asked to boot and is not enrolled: waiting for
// approval, or refused (Refused says why).
type Pending struct {
	Serial    string    `json:"serial,omitempty"`
	MAC       string    `json:"mac"`
	Model     string    `json:"model,omitempty"`
	Revision  string    `json:"revision,omitempty"`
	Address   string    `json:"address,omitempty"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Attempts  int       `json:"attempts"`
	Refused   string    `json:"refused,omitempty"`
}

// Key identifies the Pi: its serial, else its MAC.
func (p Pending) Key() string {
	if p.Serial != "" {
		return p.Serial
	}
	return p.MAC
}

// Enroller decides, for each Pi that is not a node of the cluster file,
// whether it is an enrolled node, becomes one now (mode auto), waits for
// approval, or is refused. It is safe for concurrent use.
type Enroller struct {
	// Policy is the enroll: policy; nil enrols nothing (enrolled nodes
	// are still recognised).
	Policy *Policy
	// Store holds the enrolled nodes. Required.
	Store *Store
	// PendingPath is where the pending list is kept (in the state
	// directory); empty keeps it in memory only.
	PendingPath string
	// Taken reports names of the cluster file's nodes; nil means none.
	Taken func(string) bool
	// Log receives one line per decision and boot attempt; nil = silent.
	Log *slog.Logger
	// Now returns the time (time.Now if nil).
	Now func() time.Time

	mu      sync.Mutex
	pending map[string]*Pending
	saved   time.Time
}

func (e *Enroller) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Enroller) log() *slog.Logger {
	if e.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Log
}

// ErrNotEnrolled is returned for a Pi that is not enrolled when there is
// no enroll policy.
var ErrNotEnrolled = errors.New("not enrolled and no enroll: policy")

// Lookup returns the enrolled node m is, enrolling it first when the
// policy is auto. It returns an error wrapping ErrPending (approve mode),
// ErrRefused (the policy refuses it, or it conflicts with an enrolled
// node) or ErrNotEnrolled; any other error means the enrollment could not
// be recorded, and the Pi must not be served.
func (e *Enroller) Lookup(m Machine, addr netip.Addr) (Record, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	st, err := e.Store.Load()
	if err != nil {
		return Record{}, err
	}
	rec, err := match(st, m)
	if rec != nil {
		e.forget(m)
		return *rec, nil
	}
	if err != nil {
		e.note(m, addr, "", err)
		return Record{}, err
	}
	if e.Policy == nil {
		return Record{}, ErrNotEnrolled
	}
	model, err := e.Policy.accept(st, m)
	if err != nil {
		e.note(m, addr, model, err)
		return Record{}, err
	}
	if e.Policy.Mode != ModeAuto {
		err := fmt.Errorf("%w: run `imgbake netboot approve %s` to enrol it", ErrPending, m.Key())
		e.note(m, addr, model, err)
		return Record{}, err
	}
	var r Record
	err = e.Store.Update(func(st *State) error {
		// Another writer may have changed the file since it was read.
		if rec, err := match(st, m); rec != nil || err != nil {
			if rec != nil {
				r = *rec
				return errDone
			}
			return err
		}
		if _, err := e.Policy.accept(st, m); err != nil {
			return err
		}
		name, err := e.Policy.name(st, m, e.Taken)
		if err != nil {
			return err
		}
		r = newRecord(name, e.Policy.Profile, model, m, "auto", e.now())
		st.Nodes = append(st.Nodes, r)
		return nil
	})
	if errors.Is(err, errDone) {
		return r, nil
	}
	if err != nil {
		if errors.Is(err, ErrRefused) {
			e.note(m, addr, model, err)
			return Record{}, err
		}
		e.log().Error("enroll: could not record the enrollment; the Pi is not served until it can be (free space in the cluster file's directory?)",
			"machine", m.Key(), "mac", m.MAC.String(), "err", err)
		return Record{}, fmt.Errorf("recording the enrollment of %s: %w", m.Key(), err)
	}
	e.forget(m)
	e.log().Info("enroll: enrolled a new node (mode auto)", "node", r.Name, "profile", r.Profile, "model", r.Model,
		"serial", r.Serial, "mac", r.MAC, "file", e.Store.Path)
	return r, nil
}

var errDone = errors.New("already enrolled")

func newRecord(name, profile, model string, m Machine, by string, now time.Time) Record {
	r := Record{Name: name, Profile: profile, Model: model, Serial: string(m.Serial), MAC: m.MAC.String(),
		Enrolled: now.UTC().Truncate(time.Second), By: by}
	if m.Revision != 0 {
		r.Revision = fmt.Sprintf("%06x", m.Revision)
	}
	return r
}

// note records m in the pending list and logs it once per boot attempt.
func (e *Enroller) note(m Machine, addr netip.Addr, model string, why error) {
	e.loadPending()
	now := e.now()
	k := m.Key()
	p, ok := e.pending[k]
	if !ok {
		p = &Pending{Serial: string(m.Serial), MAC: m.MAC.String(), FirstSeen: now}
		e.pending[k] = p
	}
	p.Model = model
	if m.Revision != 0 {
		p.Revision = fmt.Sprintf("%06x", m.Revision)
	}
	if addr.IsValid() {
		p.Address = addr.String()
	}
	refused := ""
	if errors.Is(why, ErrRefused) {
		refused = strings.TrimPrefix(why.Error(), ErrRefused.Error()+": ")
	}
	changed := !ok || p.Refused != refused
	p.Refused = refused
	newAttempt := !ok || now.Sub(p.LastSeen) > attemptGap
	p.LastSeen = now
	if newAttempt {
		p.Attempts++
		if refused != "" {
			e.log().Warn("enroll: not answering a Pi: "+refused, "serial", p.Serial, "mac", p.MAC, "model", model)
		} else {
			e.log().Info("enroll: Pi waiting for approval; run `imgbake netboot pending` to see it and `imgbake netboot approve "+k+"` to enrol it",
				"serial", p.Serial, "mac", p.MAC, "model", model, "address", p.Address)
		}
	}
	e.trim()
	if changed || newAttempt || now.Sub(e.saved) > time.Minute {
		e.savePending()
	}
}

// forget drops m from the pending list once it is enrolled.
func (e *Enroller) forget(m Machine) {
	e.loadPending()
	if _, ok := e.pending[m.Key()]; ok {
		delete(e.pending, m.Key())
		e.savePending()
	}
}

func (e *Enroller) trim() {
	for len(e.pending) > maxPending {
		var oldest string
		for k, p := range e.pending {
			if oldest == "" || p.LastSeen.Before(e.pending[oldest].LastSeen) {
				oldest = k
			}
		}
		delete(e.pending, oldest)
	}
}

func (e *Enroller) loadPending() {
	if e.pending != nil {
		return
	}
	e.pending = map[string]*Pending{}
	if e.PendingPath == "" {
		return
	}
	list, err := ReadPending(e.PendingPath)
	if err != nil {
		e.log().Warn("enroll: reading the pending list; starting a new one", "err", err)
		return
	}
	for i := range list {
		p := list[i]
		e.pending[p.Key()] = &p
	}
}

func (e *Enroller) savePending() {
	if e.PendingPath == "" {
		return
	}
	list := make([]Pending, 0, len(e.pending))
	for _, p := range e.pending {
		list = append(list, *p)
	}
	sortPending(list)
	data, err := json.MarshalIndent(list, "", "  ")
	if err == nil {
		err = tempfile.WriteFile(e.PendingPath, append(data, '\n'), 0o644)
	}
	if err != nil {
		e.log().Warn("enroll: saving the pending list", "err", err)
		return
	}
	e.saved = e.now()
}

func sortPending(list []Pending) {
	sort.Slice(list, func(i, j int) bool { return list[i].FirstSeen.Before(list[j].FirstSeen) })
}

// ReadPending reads a pending list; a missing file is an empty list.
func ReadPending(path string) ([]Pending, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the pending list: %w", err)
	}
	var list []Pending
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("reading the pending list %s: %w", path, err)
	}
	sortPending(list)
	return list, nil
}

// Approve enrols the pending Pi key (its serial or MAC, as `imgbake
// netboot pending` lists it) under name, or under the policy's pattern
// when name is empty. The Pi must be in the pending list and not refused;
// the model and node limit are checked again. The server picks the new
// node up from the file and boots the Pi at its next attempt.
func Approve(p *Policy, store *Store, pendingPath, key, name string, taken func(string) bool, now time.Time) (Record, error) {
	list, err := ReadPending(pendingPath)
	if err != nil {
		return Record{}, err
	}
	key = strings.ToLower(key)
	i := slices.IndexFunc(list, func(x Pending) bool { return x.Key() == key || strings.EqualFold(x.MAC, key) })
	if i < 0 {
		return Record{}, fmt.Errorf("no Pi %s is waiting for approval; `imgbake netboot pending` lists those that are (the Pi must have tried to boot while imgbake netboot ran)", key)
	}
	pd := list[i]
	if pd.Refused != "" {
		return Record{}, fmt.Errorf("%s was refused: %s", key, pd.Refused)
	}
	m, err := pd.machine()
	if err != nil {
		return Record{}, err
	}
	var r Record
	err = store.Update(func(st *State) error {
		if rec, err := match(st, m); rec != nil {
			return fmt.Errorf("%s is already enrolled as %s", key, rec.Name)
		} else if err != nil {
			return err
		}
		model, err := p.accept(st, m)
		if err != nil {
			return err
		}
		if name == "" {
			if name, err = p.name(st, m, taken); err != nil {
				return err
			}
		} else if err := p.CheckNewName(st, name, taken); err != nil {
			return err
		}
		r = newRecord(name, p.Profile, model, m, "approve", now)
		st.Nodes = append(st.Nodes, r)
		return nil
	})
	return r, err
}

func (p Pending) machine() (Machine, error) {
	var m Machine
	var err error
	if m.MAC, err = parseMAC(p.MAC); err != nil {
		return m, err
	}
	m.Serial = serialOf(p.Serial)
	if p.Revision != "" {
		var rev uint32
		if _, err := fmt.Sscanf(p.Revision, "%x", &rev); err == nil {
			m.Revision = rev
		}
	}
	return m, nil
}
