//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// The NBD helper keeps the node's DHCP lease alive (RFC 2131 4.4.5): the
// drop-ins in /run tell the distribution's network manager to leave the
// root disk's interface alone, so nobody else renews it. It never changes
// the interface's address (that would cut the root disk); when the server
// takes the address back it only says so, loudly, in the kernel log.

const (
	// minRetry is the shortest wait between two failed renewals
	// (RFC 2131 4.4.5: "down to a minimum of 60 seconds").
	minRetry = 60 * time.Second
	// lostRetry is how often a node whose address was refused asks again.
	lostRetry = 5 * time.Minute
	// defaultLease is assumed when an ACK names no lease time.
	defaultLease = time.Hour
)

// leaseInfo is what the node knows of its lease. A zero lease means
// unknown (the kernel's ip=dhcp does not say): the renewer then asks for
// the current address right away to learn it.
type leaseInfo struct {
	ifname       string
	addr, server net.IP
	// lease is the lease time (option 51); t1 and t2 the renewal and
	// rebinding times (options 58 and 59), all counted from the request.
	lease, t1, t2 time.Duration
}

// requestMode is how a DHCPREQUEST is sent (RFC 2131 4.3.2).
type requestMode int

const (
	// initReboot broadcasts with the address in option 50 and no ciaddr.
	initReboot requestMode = iota
	// renewing unicasts to the server with the address in ciaddr.
	renewing
	// rebinding broadcasts with the address in ciaddr.
	rebinding
)

func (m requestMode) String() string {
	return [...]string{"INIT-REBOOT", "RENEWING", "REBINDING"}[m]
}

// dhcpReply is a server's answer to a DHCPREQUEST.
type dhcpReply struct {
	nak           bool
	addr, server  net.IP
	lease, t1, t2 time.Duration
}

// leaseTransport sends one DHCPREQUEST for addr (to server when renewing)
// and returns the ACK or NAK, or an error when none came.
type leaseTransport interface {
	request(ctx context.Context, mode requestMode, addr, server net.IP) (dhcpReply, error)
}

// leaseClock is the renewer's time: the real one, or a fake in tests.
type leaseClock interface {
	now() time.Time
	sleep(ctx context.Context, d time.Duration) error
}

// renewer keeps one lease alive.
type renewer struct {
	tr  leaseTransport
	clk leaseClock
	// logf logs at a kernel log level (3 error, 4 warning, 6 info).
	logf func(level int, format string, args ...any)
	// onAck, when set, is called with each lease the server acknowledges.
	onAck func(leaseInfo)
}

// run renews l until ctx ends; it only returns ctx's error.
func (r *renewer) run(ctx context.Context, l leaseInfo) error {
	l = normalize(l)
	start := r.clk.now()
	lost, expired := false, false
	for ctx.Err() == nil {
		now := r.clk.now()
		mode, deadline := initReboot, time.Time{}
		if l.lease > 0 && !lost {
			t1, t2, end := start.Add(l.t1), start.Add(l.t2), start.Add(l.lease)
			switch {
			case now.Before(t1):
				r.clk.sleep(ctx, t1.Sub(now))
				continue
			case now.Before(t2):
				mode, deadline = renewing, t2
			case now.Before(end):
				mode, deadline = rebinding, end
			default:
				mode = rebinding
				if !expired {
					expired = true
					r.logf(3, "the DHCP lease of %s on %s expired without renewal: the server may give the address to another machine, "+
						"and the root disk will stall; give this node a DHCP reservation", l.addr, l.ifname)
				}
			}
		}
		rep, err := r.tr.request(ctx, mode, l.addr, l.server)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			wait := retryWait(now, deadline, l.lease)
			r.logf(4, "renewing the DHCP lease of %s (%s): %v; retrying in %s", l.addr, mode, err, wait)
			r.clk.sleep(ctx, wait)
			continue
		}
		if rep.nak || !rep.addr.Equal(l.addr) {
			if !lost {
				what := "refused it (NAK)"
				if !rep.nak {
					what = "offered " + rep.addr.String() + " instead"
				}
				r.logf(3, "the DHCP server %s %s: this node's address %s on %s is LOST and may go to another machine; "+
					"the root disk will stall. Give the node a DHCP reservation for %s and reboot it", rep.server, what, l.addr, l.ifname, l.addr)
			}
			lost = true
			r.clk.sleep(ctx, lostRetry)
			continue
		}
		if lost || expired {
			r.logf(3, "the DHCP server %s acknowledged %s on %s again", rep.server, l.addr, l.ifname)
		}
		lost, expired, start = false, false, now
		l = normalize(leaseInfo{ifname: l.ifname, addr: l.addr, server: rep.server, lease: rep.lease, t1: rep.t1, t2: rep.t2})
		r.logf(6, "DHCP lease of %s renewed for %s from %s (%s)", l.addr, l.lease, l.server, mode)
		if r.onAck != nil {
			r.onAck(l)
		}
	}
	return ctx.Err()
}

// retryWait is how long to wait after a failed request sent at now: half
// the time left until deadline, at least minRetry, but not past deadline
// (RFC 2131 4.4.5). Without a deadline (learning an unknown lease, or
// after expiry) it is minRetry, or a tenth of the lease for short ones.
func retryWait(now, deadline time.Time, lease time.Duration) time.Duration {
	if deadline.IsZero() || !deadline.After(now) {
		if lease > 0 && lease/10 < minRetry {
			return max(lease/10, time.Second)
		}
		return minRetry
	}
	left := deadline.Sub(now)
	return min(max(left/2, minRetry), left)
}

// normalize fills in T1 and T2 (RFC 2131 4.4.5: 0.5 and 0.875 of the
// lease) when the server gave none or inconsistent ones.
func normalize(l leaseInfo) leaseInfo {
	if l.lease <= 0 {
		l.lease, l.t1, l.t2 = 0, 0, 0
		return l
	}
	if l.t1 <= 0 || l.t1 > l.lease {
		l.t1 = l.lease / 2
	}
	if l.t2 <= 0 || l.t2 > l.lease || l.t2 < l.t1 {
		l.t2 = l.lease * 7 / 8
	}
	return l
}

// String encodes the lease for the helper's command line:
// ifname,addr,server,lease,t1,t2 (seconds); server and times may be empty.
func (l leaseInfo) String() string {
	server := ""
	if l.server != nil {
		server = l.server.String()
	}
	s := func(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }
	return strings.Join([]string{l.ifname, l.addr.String(), server, s(l.lease), s(l.t1), s(l.t2)}, ",")
}

// parseLease decodes leaseInfo.String.
func parseLease(s string) (leaseInfo, error) {
	f := strings.Split(s, ",")
	if len(f) != 6 {
		return leaseInfo{}, fmt.Errorf("lease %q: want ifname,addr,server,lease,t1,t2", s)
	}
	l := leaseInfo{ifname: f[0], addr: net.ParseIP(f[1]).To4()}
	if l.ifname == "" || l.addr == nil {
		return leaseInfo{}, fmt.Errorf("lease %q: no interface or IPv4 address", s)
	}
	if f[2] != "" {
		l.server = net.ParseIP(f[2]).To4()
	}
	for i, d := range []*time.Duration{&l.lease, &l.t1, &l.t2} {
		n, err := strconv.ParseUint(f[3+i], 10, 32)
		if err != nil {
			return leaseInfo{}, fmt.Errorf("lease %q: %w", s, err)
		}
		*d = time.Duration(n) * time.Second
	}
	return normalize(l), nil
}

// realClock is the wall clock; Go's timers run on the monotonic clock, so
// the node setting its time by NTP does not move the renewal.
type realClock struct{}

func (realClock) now() time.Time { return time.Now() }

func (realClock) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
