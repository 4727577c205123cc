// Package testlog holds what tests share to watch a server's log.
package testlog

import (
	"bytes"
	"sync"
)

// Buffer collects log output written by concurrent goroutines (a server's
// connection handlers) so a test can read it while they run.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p; it is safe for concurrent use.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
