package k3s

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imgbake/imgbake/internal/progress"
	"github.com/imgbake/imgbake/internal/tempfile"
)

// Fetcher downloads k3s release binaries into a cache.
type Fetcher struct {
	// BaseURL is the release base (https://github.com/k3s-io/k3s/releases/download
	// or a mirror); assets are at <BaseURL>/<version>/<asset>.
	BaseURL string
	// CacheDir holds verified binaries under k3s/<version>/<arch>/.
	CacheDir string
	// Client does the requests; nil means one with sane timeouts.
	Client *http.Client
	// Progress receives a progress bar (only drawn on a terminal); nil for none.
	Progress io.Writer
	// Log receives retries and cache hits; nil is silent.
	Log *slog.Logger
	// Attempts per download (default 4); Backoff is the first wait between
	// attempts (default 1s), doubled each time.
	Attempts int
	Backoff  time.Duration
	// IdleTimeout gives up on (and retries) a download that receives no
	// data for this long (default 60s).
	IdleTimeout time.Duration
}

// errStalled ends a download that received nothing for IdleTimeout.
var errStalled = errors.New("download stalled")

// statusError is an HTTP response that was not 200.
type statusError struct {
	url  string
	code int
}

func (e *statusError) Error() string {
	return fmt.Sprintf("GET %s: %d %s", e.url, e.code, http.StatusText(e.code))
}

func (e *statusError) retry() bool { return e.code >= 500 || e.code == http.StatusTooManyRequests }

// Fetch returns the verified k3s binary of version for arch, from the cache
// when a verified copy is there.
func (f *Fetcher) Fetch(ctx context.Context, version, arch string) (*Binary, error) {
	asset, sumsName, err := Asset(arch)
	if err != nil {
		return nil, err
	}
	if f.CacheDir == "" {
		return nil, errors.New("fetching k3s: no cache directory set")
	}
	dir := filepath.Join(f.CacheDir, "k3s", version, arch)
	bin, sumsPath := filepath.Join(dir, asset), filepath.Join(dir, sumsName)
	// A download a killed imgbake left (tens of MB) goes; one in progress
	// in another imgbake stays.
	tempfile.RemoveStale(dir, f.log())

	if sums, err := os.ReadFile(sumsPath); err == nil {
		if want, ok := parseSums(sums, asset); ok {
			if got, err := fileSHA256(bin); err == nil {
				if got == want && CheckELF(bin, arch) == nil {
					f.log().Debug("using cached k3s", "version", version, "arch", arch, "path", bin)
					return &Binary{Path: bin, SHA256: got, Arch: arch, Version: version}, nil
				}
				f.log().Warn("cached k3s binary fails verification; downloading it again", "path", bin)
			}
		}
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating cache %s: %w", dir, err)
	}
	base := strings.TrimRight(f.BaseURL, "/") + "/" + escapeVersion(version) + "/"
	var sums []byte
	err = f.retry(ctx, base+sumsName, func(body io.Reader, _ int64) error {
		var rerr error
		sums, rerr = io.ReadAll(io.LimitReader(body, 1<<20))
		return rerr
	})
	if err != nil {
		return nil, f.explain(err, version, sumsName)
	}
	want, ok := parseSums(sums, asset)
	if !ok {
		return nil, fmt.Errorf("%s%s does not list %s; is %s a k3s release (or does the mirror hold a complete copy)?", base, sumsName, asset, version)
	}

	tmp, got, err := f.download(ctx, base+asset, dir, asset)
	if err != nil {
		return nil, f.explain(err, version, asset)
	}
	defer os.Remove(tmp)
	if got != want {
		return nil, fmt.Errorf("checksum mismatch for %s%s: got sha256 %s, the release's %s says %s; the download or the mirror is corrupt: try again or use another mirror", base, asset, got, sumsName, want)
	}
	if err := CheckELF(tmp, arch); err != nil {
		return nil, fmt.Errorf("downloaded %s: %w", asset, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("caching k3s: %w", err)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return nil, fmt.Errorf("caching k3s: %w", err)
	}
	if err := tempfile.WriteFile(sumsPath, sums, 0o644); err != nil {
		return nil, fmt.Errorf("caching k3s: %w", err)
	}
	return &Binary{Path: bin, SHA256: got, Arch: arch, Version: version}, nil
}

// escapeVersion escapes a release tag for a URL path: '+' becomes %2B, as
// GitHub release download URLs have it.
func escapeVersion(v string) string {
	var b strings.Builder
	for _, c := range []byte(v) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// download fetches url into a temp file in dir, hashing it on the way, and
// returns the temp file and its sha256.
func (f *Fetcher) download(ctx context.Context, url, dir, name string) (string, string, error) {
	var tmpName, sum string
	err := f.retry(ctx, url, func(body io.Reader, size int64) error {
		tmp, err := tempfile.Create(filepath.Join(dir, name), ".part")
		if err != nil {
			return &permanent{err}
		}
		h := sha256.New()
		bar := progress.New(f.Progress, name, max(size, 0))
		n, err := io.Copy(io.MultiWriter(tmp, h), progress.NewReader(body, bar))
		bar.Done()
		if err == nil && size >= 0 && n != size {
			err = fmt.Errorf("got %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
		}
		if cerr := tmp.Close(); err == nil && cerr != nil {
			err = &permanent{cerr}
		}
		if err != nil {
			os.Remove(tmp.Name())
			return err
		}
		tmpName, sum = tmp.Name(), hex.EncodeToString(h.Sum(nil))
		return nil
	})
	return tmpName, sum, err
}

// permanent wraps an error that retrying cannot fix (a local disk error).
type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }

// retry GETs url and hands the body to use, retrying with backoff on
// network errors, truncated bodies and 5xx/429 answers.
func (f *Fetcher) retry(ctx context.Context, url string, use func(body io.Reader, size int64) error) error {
	attempts, wait := f.Attempts, f.Backoff
	if attempts <= 0 {
		attempts = 4
	}
	if wait <= 0 {
		wait = time.Second
	}
	var err error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			f.log().Info("retrying download", "url", url, "attempt", i+1, "after", wait, "error", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			wait *= 2
		}
		err = f.get(ctx, url, use)
		var se *statusError
		var pe *permanent
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &se) && !se.retry(), errors.As(err, &pe):
			return err
		}
	}
	return err
}

func (f *Fetcher) get(ctx context.Context, url string, use func(io.Reader, int64) error) error {
	idle := f.IdleTimeout
	if idle <= 0 {
		idle = 60 * time.Second
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(idle, func() { cancel(errStalled) })
	defer timer.Stop()
	err := f.getBody(ctx, url, func(body io.Reader, size int64) error {
		return use(&idleReader{r: body, timer: timer, idle: idle}, size)
	})
	if err != nil && errors.Is(context.Cause(ctx), errStalled) {
		return fmt.Errorf("no data for %s: %w", idle, errStalled)
	}
	return err
}

// idleReader pushes back its timer on every read that returns data.
type idleReader struct {
	r     io.Reader
	timer *time.Timer
	idle  time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.timer.Reset(r.idle)
	}
	return n, err
}

func (f *Fetcher) getBody(ctx context.Context, url string, use func(io.Reader, int64) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return &permanent{err}
	}
	req.Header.Set("User-Agent", "imgbake")
	resp, err := f.client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return &statusError{url: url, code: resp.StatusCode}
	}
	return use(resp.Body, resp.ContentLength)
}

// explain turns a download failure into advice.
func (f *Fetcher) explain(err error, version, asset string) error {
	var se *statusError
	if errors.As(err, &se) && se.code == http.StatusNotFound {
		return fmt.Errorf("downloading k3s: %s was not found (404): is %q a k3s release tag (see https://github.com/k3s-io/k3s/releases), and does the release URL %s hold it?", se.url, version, f.BaseURL)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("downloading k3s %s (%s): %w; check the network, set k3s.release-url in the cluster file to a reachable mirror, or pass --k3s-binary with a local k3s binary", version, asset, err)
}

func (f *Fetcher) client() *http.Client {
	if f.Client != nil {
		return f.Client
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 60 * time.Second
	return &http.Client{Transport: t}
}

func (f *Fetcher) log() *slog.Logger {
	if f.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return f.Log
}
