//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeClock advances instantly on sleep.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	c.t = c.t.Add(d)
	return ctx.Err()
}

// step is one scripted answer of fakeTransport.
type step struct {
	rep dhcpReply
	err error
}

// fakeTransport records each request as "<seconds since t0> <mode> <server>"
// and answers from a script; when it runs out it cancels the run.
type fakeTransport struct {
	clk    *fakeClock
	t0     time.Time
	script []step
	got    []string
	cancel context.CancelFunc
}

func (f *fakeTransport) request(ctx context.Context, mode requestMode, addr, server net.IP) (dhcpReply, error) {
	if len(f.script) == 0 {
		f.cancel()
		return dhcpReply{}, ctx.Err()
	}
	f.got = append(f.got, fmt.Sprintf("%d %s %s %v", int(f.clk.t.Sub(f.t0)/time.Second), mode, addr, server))
	s := f.script[0]
	f.script = f.script[1:]
	return s.rep, s.err
}

var (
	nodeIP   = net.IPv4(10, 0, 0, 5).To4()
	serverIP = net.IPv4(10, 0, 0, 1).To4()
	otherIP  = net.IPv4(10, 0, 0, 6).To4()
)

func ack(lease time.Duration) step {
	return step{rep: dhcpReply{addr: nodeIP, server: serverIP, lease: lease}}
}

var errTimeout = errors.New("no answer")

func TestRenewSchedule(t *testing.T) {
	hour := time.Hour
	known := leaseInfo{ifname: "eth0", addr: nodeIP, server: serverIP, lease: 2 * hour}
	for _, tc := range []struct {
		name   string
		lease  leaseInfo
		script []step
		want   []string
		logs   []string // substrings of error-level messages, in order
	}{{
		name:   "renews at T1 each time",
		lease:  known,
		script: []step{ack(2 * hour), ack(2 * hour)},
		want:   []string{"3600 RENEWING 10.0.0.5 10.0.0.1", "7200 RENEWING 10.0.0.5 10.0.0.1"},
	}, {
		name:  "server's T1 and T2",
		lease: leaseInfo{ifname: "eth0", addr: nodeIP, server: serverIP, lease: 2 * hour, t1: 10 * time.Minute, t2: 20 * time.Minute},
		script: []step{{err: errTimeout}, {err: errTimeout}, {err: errTimeout}, {err: errTimeout}, {err: errTimeout},
			{rep: dhcpReply{addr: nodeIP, server: serverIP, lease: hour, t1: 40 * time.Minute}}, ack(hour)},
		// T1 600 s; retries after half the time left to T2 (300, 150,
		// 75), at least 60 s but not past T2; at T2 broadcast; the next
		// T1 is the server's 40 min.
		want: []string{"600 RENEWING 10.0.0.5 10.0.0.1", "900 RENEWING 10.0.0.5 10.0.0.1", "1050 RENEWING 10.0.0.5 10.0.0.1",
			"1125 RENEWING 10.0.0.5 10.0.0.1", "1185 RENEWING 10.0.0.5 10.0.0.1", "1200 REBINDING 10.0.0.5 10.0.0.1",
			"3600 RENEWING 10.0.0.5 10.0.0.1"},
	}, {
		name:  "backoff to T2, rebinding to expiry, then expired",
		lease: leaseInfo{ifname: "eth0", addr: nodeIP, server: serverIP, lease: 160 * time.Second},
		script: []step{{err: errTimeout}, {err: errTimeout}, {err: errTimeout},
			{err: errTimeout}, ack(160 * time.Second)},
		// T1 80, T2 140, expiry 160: retries at least 60 s apart, never
		// past the next deadline; after expiry every lease/10 = 16 s.
		want: []string{"80 RENEWING 10.0.0.5 10.0.0.1", "140 REBINDING 10.0.0.5 10.0.0.1", "160 REBINDING 10.0.0.5 10.0.0.1",
			"176 REBINDING 10.0.0.5 10.0.0.1", "192 REBINDING 10.0.0.5 10.0.0.1"},
		logs: []string{"expired without renewal", "acknowledged 10.0.0.5 on eth0 again"},
	}, {
		name:   "unknown lease: INIT-REBOOT at once, then T1",
		lease:  leaseInfo{ifname: "eth0", addr: nodeIP},
		script: []step{{err: errTimeout}, ack(hour), ack(hour)},
		want:   []string{"0 INIT-REBOOT 10.0.0.5 <nil>", "60 INIT-REBOOT 10.0.0.5 <nil>", "1860 RENEWING 10.0.0.5 10.0.0.1"},
	}, {
		name:  "NAK: lost, logged once, asked again every 5 min",
		lease: known,
		script: []step{{rep: dhcpReply{nak: true, server: serverIP}}, {rep: dhcpReply{nak: true, server: serverIP}},
			ack(2 * hour), ack(2 * hour)},
		want: []string{"3600 RENEWING 10.0.0.5 10.0.0.1", "3900 INIT-REBOOT 10.0.0.5 10.0.0.1", "4200 INIT-REBOOT 10.0.0.5 10.0.0.1",
			"7800 RENEWING 10.0.0.5 10.0.0.1"},
		logs: []string{"10.0.0.1 refused it (NAK): this node's address 10.0.0.5 on eth0 is LOST", "acknowledged 10.0.0.5 on eth0 again"},
	}, {
		name:   "another address is a loss too",
		lease:  known,
		script: []step{{rep: dhcpReply{addr: otherIP, server: serverIP, lease: hour}}},
		want:   []string{"3600 RENEWING 10.0.0.5 10.0.0.1"},
		logs:   []string{"offered 10.0.0.6 instead: this node's address 10.0.0.5 on eth0 is LOST"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			tr := &fakeTransport{clk: clk, t0: clk.t, script: tc.script, cancel: cancel}
			var errs []string
			r := &renewer{tr: tr, clk: clk, logf: func(level int, format string, args ...any) {
				if level <= 3 {
					errs = append(errs, fmt.Sprintf(format, args...))
				}
			}}
			if err := r.run(ctx, tc.lease); !errors.Is(err, context.Canceled) {
				t.Errorf("run: %v, want context.Canceled", err)
			}
			if diff := cmp.Diff(tc.want, tr.got); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
			if len(errs) != len(tc.logs) {
				t.Fatalf("error logs: %q, want %d matching %q", errs, len(tc.logs), tc.logs)
			}
			for i, want := range tc.logs {
				if !strings.Contains(errs[i], want) {
					t.Errorf("error log %d: %q, want it to contain %q", i, errs[i], want)
				}
			}
		})
	}
}

func TestLeaseArg(t *testing.T) {
	l := leaseInfo{ifname: "eth0", addr: nodeIP, server: serverIP, lease: time.Hour, t1: 10 * time.Minute, t2: 50 * time.Minute}
	got, err := parseLease(l.String())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(l.String(), got.String()); diff != "" || !got.addr.Equal(nodeIP) || got.t2 != 50*time.Minute {
		t.Errorf("round trip: %s -> %+v", l, got)
	}
	unknown, err := parseLease(leaseInfo{ifname: "eth0", addr: nodeIP}.String())
	if err != nil || unknown.server != nil || unknown.lease != 0 {
		t.Errorf("unknown lease: %+v, %v", unknown, err)
	}
	for _, bad := range []string{"", "eth0,,,0,0,0", ",10.0.0.5,,0,0,0", "eth0,10.0.0.5,,x,0,0", "eth0,10.0.0.5"} {
		if _, err := parseLease(bad); err == nil {
			t.Errorf("parseLease(%q) accepted", bad)
		}
	}
}
