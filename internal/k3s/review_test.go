package k3s

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLocalNotELFMessage: a file that is not an ELF at all (a script, the
// release's .tar.gz by mistake) is named plainly, without debug/elf's
// "bad magic number '[35 33 47 98]'" detail, with what to give instead.
func TestLocalNotELFMessage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k3s")
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho k3s\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Local(p, "arm64")
	if err == nil {
		t.Fatal("a shell script was accepted")
	}
	if msg := err.Error(); strings.Contains(msg, "magic") || !strings.Contains(msg, p+" is not an ELF executable") || !strings.Contains(msg, "k3s-arm64") {
		t.Errorf("message: %q", msg)
	}
}

// TestFetchStalledBody: a mirror that sends part of the binary and then
// nothing is given up on after IdleTimeout (and retried), instead of
// hanging the build forever with no message.
func TestFetchStalledBody(t *testing.T) {
	bins := buildELFs(t)
	rel, srv := newRelease(t, bins)
	release := make(chan struct{})
	defer close(release) // lets the stalled handlers return before srv.Close
	rel.fail = func(w http.ResponseWriter, r *http.Request, n int32) bool {
		if !strings.HasSuffix(r.URL.Path, "k3s-arm64") {
			return false
		}
		data := bins["arm64"]
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.Write(data[:1000])
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return true
	}
	f := fetcher(srv, t.TempDir())
	f.IdleTimeout = 200 * time.Millisecond
	done := make(chan error, 1)
	go func() {
		_, err := f.Fetch(context.Background(), "v1.31.4+k3s1", "arm64")
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "no data for") || !strings.Contains(err.Error(), "--k3s-binary") {
			t.Errorf("stalled download: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Fetch hangs on a stalled download")
	}
	if n := rel.requests.Load(); n < 4 { // sums + 3 attempts
		t.Errorf("%d requests: the stalled download was not retried", n)
	}
}
