package k3s

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestChannelVersion asks a loopback channel server that answers as
// update.k3s.io does: a redirect to the release page of the tag.
func TestChannelVersion(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1-release/channels/stable":
			http.Redirect(w, r, "https://github.com/k3s-io/k3s/releases/tag/v1.36.4%2Bk3s1", http.StatusFound)
		case "/v1-release/channels/bad":
			http.Redirect(w, r, "https://github.com/k3s-io/k3s/releases", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	got, err := ChannelVersion(ctx, srv.Client(), srv.URL+"/v1-release/channels", "stable")
	if err != nil || got != "v1.36.4+k3s1" {
		t.Fatalf("stable = %q, %v; want v1.36.4+k3s1", got, err)
	}
	if _, err := ChannelVersion(ctx, srv.Client(), srv.URL+"/v1-release/channels", "bad"); err == nil || !strings.Contains(err.Error(), "names no k3s release tag") {
		t.Errorf("bad redirect: %v", err)
	}
	if _, err := ChannelVersion(ctx, srv.Client(), srv.URL+"/v1-release/channels", "none"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("404: %v", err)
	}
}

// TestChannelVersionUnreachable: a closed port and a server that never
// answers both fail within the caller's deadline.
func TestChannelVersionUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if _, err := ChannelVersion(context.Background(), nil, "http://"+addr, "stable"); err == nil {
		t.Error("closed port: no error")
	}
	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	if _, err := ChannelVersion(ctx, nil, "http://"+silent.Addr().String(), "stable"); err == nil {
		t.Error("silent server: no error")
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("gave up after %s, want about the 300ms deadline", d)
	}
}

func TestSupportWarning(t *testing.T) {
	now := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	for tag, want := range map[string]string{
		"v1.36.4+k3s1": "",
		"v1.35.2+k3s1": "",
		"v1.37.0+k3s1": "",
		"v1.34.9+k3s1": "reached its end of life on 2026-10-27",
		"v1.31.4+k3s1": "reached its end of life on 2025-10-28",
		"v1.28.1+k3s1": "long out of support",
	} {
		got := SupportWarning(tag, now)
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("SupportWarning(%s) = %q, want %q", tag, got, want)
		}
	}
	if w := SupportWarning(DefaultVersion, time.Now()); w != "" {
		t.Errorf("the compiled-in default is out of support: %s", w)
	}
	if !NeedsCgroupV2("v1.35.0+k3s1") || NeedsCgroupV2("v1.34.9+k3s1") {
		t.Error("NeedsCgroupV2: 1.35 needs cgroup v2, 1.34 does not")
	}
}
