package netboot

import (
	"net/netip"
	"testing"
)

// TestSlots: the limit in all and per client, and slots given back are
// free again (with no entry left for a client that holds none).
func TestSlots(t *testing.T) {
	a, b, c := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	var s Slots
	take := func(client netip.Addr, want bool) {
		t.Helper()
		if got := s.Take(client, 3, 2); got != want {
			t.Errorf("Take(%v) = %v, want %v (total %d, by client %v)", client, got, want, s.total, s.by)
		}
	}
	take(a, true)
	take(a, true)
	take(a, false) // a has 2, its limit
	take(b, true)
	take(c, false) // 3 in all
	s.Give(a)
	take(c, true)
	take(c, false)
	s.Give(a)
	s.Give(b)
	s.Give(c)
	if s.total != 0 || len(s.by) != 0 {
		t.Errorf("after giving every slot back: total %d, by client %v", s.total, s.by)
	}
	take(a, true)
	take(a, true)
}
