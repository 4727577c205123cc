package netboot

import (
	"fmt"
	"testing"
	"time"
)

func TestLogLimit(t *testing.T) {
	var l LogLimit
	now := time.Unix(1e9, 0)
	allowed := 0
	// 10,000 requests from 1,000 made-up machines within a minute.
	for i := range 10000 {
		if ok, _ := l.allow(fmt.Sprint(i%1000), now.Add(time.Duration(i)*time.Millisecond)); ok {
			allowed++
		}
	}
	if allowed != 20 {
		t.Errorf("%d lines in a minute, want the burst of 20", allowed)
	}
	// A minute later one line again, saying how many were dropped.
	ok, dropped := l.allow("7", now.Add(2*time.Minute))
	if !ok || dropped != 10000-20 {
		t.Errorf("after a minute: %v, %d dropped", ok, dropped)
	}
	// One machine repeating itself: one line per minute.
	ok, _ = l.allow("7", now.Add(2*time.Minute+time.Second))
	if ok {
		t.Error("a repeated line within a minute is logged")
	}
	if len(l.seen) > 4096 {
		t.Errorf("%d keys remembered", len(l.seen))
	}
}
