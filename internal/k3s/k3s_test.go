package k3s

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// elfs holds tiny real Linux executables per image arch, built once.
type elfs map[string][]byte

// testELFs is built once by TestMain; nil when the go tool is missing.
var testELFs elfs

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "k3stest")
	if err == nil {
		testELFs, err = compileELFs(dir)
		os.RemoveAll(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "k3s tests: cannot cross-compile test ELF files:", err)
	}
	os.Exit(m.Run())
}

func buildELFs(t *testing.T) elfs {
	t.Helper()
	if testELFs == nil {
		t.Skip("go toolchain not usable: cannot cross-compile test ELF files (see TestMain output)")
	}
	return testELFs
}

// compileELFs cross-compiles a tiny Go program for arm64 and armv7 Linux.
func compileELFs(dir string) (elfs, error) {
	if _, err := exec.LookPath("go"); err != nil {
		return nil, err
	}
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\nfunc main() { println(\"k3s\") }\n"), 0o644); err != nil {
		return nil, err
	}
	out := elfs{}
	for arch, env := range map[string][]string{
		"arm64": {"GOARCH=arm64"},
		"armhf": {"GOARCH=arm", "GOARM=7"},
	} {
		bin := filepath.Join(dir, arch)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, src)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), append(env, "GOOS=linux", "CGO_ENABLED=0", "GO111MODULE=off", "GOFLAGS=")...)
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%s: %v\n%s", arch, err, b)
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			return nil, err
		}
		out[arch] = data
	}
	return out, nil
}

// release is a fake k3s release server for one version.
type release struct {
	files    map[string][]byte // asset name -> content
	requests atomic.Int32
	// fail is called before serving; returning true means it answered.
	fail func(w http.ResponseWriter, r *http.Request, n int32) bool
}

func (rel *release) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := rel.requests.Add(1)
	if rel.fail != nil && rel.fail(w, r, n) {
		return
	}
	const prefix = "/v1.31.4%2Bk3s1/"
	if !strings.HasPrefix(r.URL.RawPath, prefix) && !strings.HasPrefix(r.URL.EscapedPath(), prefix) {
		http.NotFound(w, r)
		return
	}
	data, ok := rel.files[filepath.Base(r.URL.Path)]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	w.Write(data)
}

func newRelease(t *testing.T, bins elfs) (*release, *httptest.Server) {
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	rel := &release{files: map[string][]byte{
		"k3s-arm64":           bins["arm64"],
		"k3s-armhf":           bins["armhf"],
		"sha256sum-arm64.txt": []byte(sum(bins["arm64"]) + "  k3s-arm64\n" + strings.Repeat("0", 64) + "  k3s-airgap-images-arm64.tar\n"),
		"sha256sum-arm.txt":   []byte(sum(bins["armhf"]) + "  k3s-armhf\n"),
	}}
	srv := httptest.NewServer(rel) // loopback
	t.Cleanup(srv.Close)
	return rel, srv
}

func fetcher(srv *httptest.Server, cache string) *Fetcher {
	return &Fetcher{BaseURL: srv.URL, CacheDir: cache, Client: srv.Client(), Backoff: time.Millisecond, Attempts: 3}
}

func TestFetchAndCache(t *testing.T) {
	bins := buildELFs(t)
	rel, srv := newRelease(t, bins)
	cache := t.TempDir()
	ctx := context.Background()
	for _, arch := range []string{"arm64", "armhf"} {
		b, err := fetcher(srv, cache).Fetch(ctx, "v1.31.4+k3s1", arch)
		if err != nil {
			t.Fatalf("Fetch %s: %v", arch, err)
		}
		data, err := os.ReadFile(b.Path)
		if err != nil || string(data) != string(bins[arch]) {
			t.Fatalf("%s: cached binary differs (%v)", arch, err)
		}
		st, _ := os.Stat(b.Path)
		if st.Mode().Perm() != 0o755 {
			t.Errorf("cached mode %o", st.Mode().Perm())
		}
		if want := filepath.Join(cache, "k3s", "v1.31.4+k3s1", arch); filepath.Dir(b.Path) != want {
			t.Errorf("cached at %s, want under %s", b.Path, want)
		}
	}
	before := rel.requests.Load()
	if _, err := fetcher(srv, cache).Fetch(ctx, "v1.31.4+k3s1", "arm64"); err != nil {
		t.Fatal(err)
	}
	if rel.requests.Load() != before {
		t.Errorf("cache hit still made %d requests", rel.requests.Load()-before)
	}
	// A corrupted cached file is re-verified and downloaded again.
	p := filepath.Join(cache, "k3s", "v1.31.4+k3s1", "arm64", "k3s-arm64")
	if err := os.WriteFile(p, []byte("garbage"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := fetcher(srv, cache).Fetch(ctx, "v1.31.4+k3s1", "arm64")
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(b.Path); string(data) != string(bins["arm64"]) {
		t.Error("corrupt cache entry was not replaced")
	}
	if rel.requests.Load() == before {
		t.Error("corrupt cache entry did not trigger a download")
	}
}

func TestFetchChecksumMismatch(t *testing.T) {
	bins := buildELFs(t)
	rel, srv := newRelease(t, bins)
	rel.files["k3s-arm64"] = bins["armhf"] // wrong content
	cache := t.TempDir()
	_, err := fetcher(srv, cache).Fetch(context.Background(), "v1.31.4+k3s1", "arm64")
	sa, sh := sha256.Sum256(bins["arm64"]), sha256.Sum256(bins["armhf"])
	if err == nil || !strings.Contains(err.Error(), hex.EncodeToString(sa[:])) || !strings.Contains(err.Error(), hex.EncodeToString(sh[:])) {
		t.Fatalf("mismatch error must name both sums: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cache, "k3s", "v1.31.4+k3s1", "arm64", "k3s-arm64")); err == nil {
		t.Error("a binary that failed verification was cached")
	}
	if left, _ := filepath.Glob(filepath.Join(cache, "k3s", "*", "*", ".*")); len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}
}

func TestFetch404(t *testing.T) {
	bins := buildELFs(t)
	_, srv := newRelease(t, bins)
	_, err := fetcher(srv, t.TempDir()).Fetch(context.Background(), "v1.99.0+k3s1", "arm64")
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "release tag") || !strings.Contains(err.Error(), "v1.99.0%2Bk3s1") {
		t.Fatalf("404 error: %v", err)
	}
}

func TestFetchRetries500ThenOK(t *testing.T) {
	bins := buildELFs(t)
	rel, srv := newRelease(t, bins)
	rel.fail = func(w http.ResponseWriter, r *http.Request, n int32) bool {
		if n <= 2 {
			http.Error(w, "busy", http.StatusInternalServerError)
			return true
		}
		return false
	}
	if _, err := fetcher(srv, t.TempDir()).Fetch(context.Background(), "v1.31.4+k3s1", "arm64"); err != nil {
		t.Fatalf("Fetch after two 500s: %v", err)
	}
}

func TestFetchTruncatedBody(t *testing.T) {
	bins := buildELFs(t)
	rel, srv := newRelease(t, bins)
	var truncated atomic.Int32
	rel.fail = func(w http.ResponseWriter, r *http.Request, n int32) bool {
		if strings.HasSuffix(r.URL.Path, "k3s-arm64") && truncated.Add(1) == 1 {
			data := bins["arm64"]
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.Write(data[:len(data)/2])
			return true // connection closes short
		}
		return false
	}
	b, err := fetcher(srv, t.TempDir()).Fetch(context.Background(), "v1.31.4+k3s1", "arm64")
	if err != nil {
		t.Fatalf("Fetch after a truncated body: %v", err)
	}
	if truncated.Load() < 2 {
		t.Error("truncated download was not retried")
	}
	if data, _ := os.ReadFile(b.Path); string(data) != string(bins["arm64"]) {
		t.Error("wrong content after retry")
	}
	// Always truncated: fails with advice.
	rel.fail = func(w http.ResponseWriter, r *http.Request, n int32) bool {
		if strings.HasSuffix(r.URL.Path, "k3s-armhf") {
			w.Header().Set("Content-Length", "1000000")
			w.Write([]byte("short"))
			return true
		}
		return false
	}
	_, err = fetcher(srv, t.TempDir()).Fetch(context.Background(), "v1.31.4+k3s1", "armhf")
	if err == nil || !strings.Contains(err.Error(), "--k3s-binary") {
		t.Fatalf("always-truncated download: %v", err)
	}
}

func TestFetchNetworkDown(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens any more
	f := &Fetcher{BaseURL: url, CacheDir: t.TempDir(), Backoff: time.Millisecond, Attempts: 2}
	_, err := f.Fetch(context.Background(), "v1.31.4+k3s1", "arm64")
	if err == nil || !strings.Contains(err.Error(), "mirror") || !strings.Contains(err.Error(), "--k3s-binary") {
		t.Fatalf("network error: %v", err)
	}
}

func TestLocalELFCheck(t *testing.T) {
	bins := buildELFs(t)
	dir := t.TempDir()
	for arch, data := range bins {
		p := filepath.Join(dir, arch)
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := Local(filepath.Join(dir, "arm64"), "arm64"); err != nil || len(b.SHA256) != 64 {
		t.Errorf("Local arm64: %v", err)
	}
	if _, err := Local(filepath.Join(dir, "armhf"), "armhf"); err != nil {
		t.Errorf("Local armhf: %v", err)
	}
	if _, err := Local(filepath.Join(dir, "armhf"), "arm64"); err == nil || !strings.Contains(err.Error(), "32-bit ARM") {
		t.Errorf("armhf binary accepted for arm64: %v", err)
	}
	if _, err := Local(filepath.Join(dir, "arm64"), "armhf"); err == nil || !strings.Contains(err.Error(), "k3s-armhf") {
		t.Errorf("arm64 binary accepted for armhf: %v", err)
	}
	self, _ := os.Executable()
	if _, err := Local(self, "arm64"); err == nil {
		t.Error("host binary accepted for arm64")
	}
	txt := filepath.Join(dir, "k3s.txt")
	os.WriteFile(txt, []byte("#!/bin/sh\n"), 0o755)
	if _, err := Local(txt, "arm64"); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Errorf("script accepted: %v", err)
	}
}

func TestEscapeVersion(t *testing.T) {
	if got := escapeVersion("v1.31.4+k3s1"); got != "v1.31.4%2Bk3s1" {
		t.Errorf("escapeVersion = %s", got)
	}
}
