package netboot

import (
	"net/netip"
	"sync"
)

// Slots counts work in progress (transfers, handshakes) in all and per
// client address, so that neither a flood in all nor one client can take
// more than its limit. The zero value is ready to use.
type Slots struct {
	mu    sync.Mutex
	by    map[netip.Addr]int
	total int
}

// Take takes a slot for client if fewer than max are taken in all and
// fewer than perClient by client, and reports whether it did; Give returns
// the slot.
func (s *Slots) Take(client netip.Addr, max, perClient int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.total >= max || s.by[client] >= perClient {
		return false
	}
	if s.by == nil {
		s.by = map[netip.Addr]int{}
	}
	s.by[client]++
	s.total++
	return true
}

// Give returns a slot that Take gave client.
func (s *Slots) Give(client netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.by[client]--; s.by[client] <= 0 {
		delete(s.by, client)
	}
}
