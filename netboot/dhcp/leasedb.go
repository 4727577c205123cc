package dhcp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// leaseState is what an address is used for.
type leaseState string

const (
	stateOffered  leaseState = "offered"  // held for a client between OFFER and REQUEST
	stateBound    leaseState = "bound"    // ACKed
	stateDeclined leaseState = "declined" // a client found it in use (DHCPDECLINE)
)

// lease is one address's record. Expired leases stay on file so that a
// returning client gets its old address back and others get it last.
type lease struct {
	MAC     string     `json:"mac,omitempty"`
	Addr    netip.Addr `json:"addr"`
	State   leaseState `json:"state"`
	Expires time.Time  `json:"expires"`
}

// leaseDB holds leases by address, persisted as JSON (temp file + rename).
type leaseDB struct {
	path   string
	leases map[netip.Addr]*lease
}

type leaseFile struct {
	Leases []*lease `json:"leases"`
}

func loadLeaseDB(path string) (*leaseDB, error) {
	db := &leaseDB{path: path, leases: make(map[netip.Addr]*lease)}
	if path == "" {
		return db, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return db, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading leases: %w", err)
	}
	var f leaseFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("reading leases from %s: %w (move the file away to start with no leases)", path, err)
	}
	for _, l := range f.Leases {
		if l != nil && l.Addr.Is4() && l.State != stateOffered {
			db.leases[l.Addr] = l
		}
	}
	return db, nil
}

// save writes the leases to a temp file, syncs it and renames it into place.
func (db *leaseDB) save() error {
	if db.path == "" {
		return nil
	}
	var f leaseFile
	for _, l := range db.leases {
		if l.State != stateOffered {
			f.Leases = append(f.Leases, l)
		}
	}
	slices.SortFunc(f.Leases, func(a, b *lease) int { return a.Addr.Compare(b.Addr) })
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(db.path), filepath.Base(db.path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing leases: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("writing leases: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing leases: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing leases: %w", err)
	}
	if err := os.Rename(tmp.Name(), db.path); err != nil {
		return fmt.Errorf("writing leases: %w", err)
	}
	return nil
}

// byMAC returns the client's most recent lease (bound or offered).
func (db *leaseDB) byMAC(mac string) *lease {
	var best *lease
	for _, l := range db.leases {
		if l.MAC == mac && l.State != stateDeclined && (best == nil || l.Expires.After(best.Expires)) {
			best = l
		}
	}
	return best
}

// free reports whether addr may be given to mac at now.
func (db *leaseDB) free(addr netip.Addr, mac string, now time.Time) bool {
	l, ok := db.leases[addr]
	return !ok || l.MAC == mac && l.State != stateDeclined || now.After(l.Expires)
}

// allocate picks an address in [start, end] for mac: never-used addresses
// first, then the one that expired longest ago, so that a released address
// goes to someone else as late as possible.
func (db *leaseDB) allocate(start, end netip.Addr, mac string, skip func(netip.Addr) bool, now time.Time) (netip.Addr, bool) {
	var oldest *lease
	for a := start; a.IsValid() && a.Compare(end) <= 0; a = a.Next() {
		if skip(a) {
			continue
		}
		l, ok := db.leases[a]
		if !ok {
			return a, true
		}
		if now.After(l.Expires) && (oldest == nil || l.Expires.Before(oldest.Expires)) {
			oldest = l
		}
	}
	if oldest == nil {
		return netip.Addr{}, false
	}
	return oldest.Addr, true
}

// set records a lease, ending mac's other offered or bound leases.
func (db *leaseDB) set(l *lease, now time.Time) {
	for a, o := range db.leases {
		if o.MAC == l.MAC && a != l.Addr && o.State != stateDeclined {
			if o.State == stateOffered {
				delete(db.leases, a)
			} else if o.Expires.After(now) {
				o.Expires = now
			}
		}
	}
	db.leases[l.Addr] = l
}
