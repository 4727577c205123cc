package netboot

import (
	"sync"
	"time"
)

// LogLimit bounds the log lines that unauthenticated network peers can
// cause: at most one line per key (a MAC, an address) per Every, at most
// Burst lines in all per Every, and at most MaxKeys keys remembered. A
// flood of requests, from one machine or from made-up ones, cannot flood
// the log. The zero value allows one line per key per minute, 20 per
// minute in all, for 4096 keys.
type LogLimit struct {
	Every   time.Duration
	Burst   int
	MaxKeys int

	mu      sync.Mutex
	seen    map[string]time.Time
	start   time.Time // of the current period
	lines   int       // lines allowed in the current period
	dropped int       // lines refused since the last allowed one
}

// Allow reports whether a line for key may be logged now, and how many
// lines were dropped since the last allowed one (to be added to it).
func (l *LogLimit) Allow(key string) (ok bool, dropped int) {
	return l.allow(key, time.Now())
}

func (l *LogLimit) allow(key string, now time.Time) (bool, int) {
	every, burst, maxKeys := l.Every, l.Burst, l.MaxKeys
	if every <= 0 {
		every = time.Minute
	}
	if burst <= 0 {
		burst = 20
	}
	if maxKeys <= 0 {
		maxKeys = 4096
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[string]time.Time{}
	}
	if now.Sub(l.start) >= every {
		l.start, l.lines = now, 0
		for k, t := range l.seen {
			if now.Sub(t) >= every {
				delete(l.seen, k)
			}
		}
	}
	if t, ok := l.seen[key]; (ok && now.Sub(t) < every) || l.lines >= burst || (!ok && len(l.seen) >= maxKeys) {
		l.dropped++
		return false, 0
	}
	l.seen[key] = now
	l.lines++
	d := l.dropped
	l.dropped = 0
	return true, d
}
