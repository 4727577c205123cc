package cli

import (
	"bufio"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgbake/imgbake/image/manifest"
	"github.com/imgbake/imgbake/internal/fixture"
)

// imgbakeBinary builds the imgbake command into a test directory.
func imgbakeBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "imgbake")
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/imgbake")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		if strings.Contains(string(out), "pattern bin/") {
			t.Skipf("the netboot init programs are not generated (run make generate): %s", out)
		}
		t.Fatalf("building imgbake: %v\n%s", err, out)
	}
	return bin
}

// outputSet is what a build leaves for a node: its three files' sha256
// ("" for a missing file).
type outputSet [3]string

var setFiles = [3]string{"k5.img", "k5.img.bmap", "k5.img.manifest.json"}

func readSet(t *testing.T, out string) outputSet {
	t.Helper()
	var s outputSet
	for i, f := range setFiles {
		sum, err := manifest.FileSHA256(filepath.Join(out, f))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		s[i] = sum
	}
	return s
}

// leftovers lists the temporary files (an interrupted build's) under dirs.
func leftovers(dirs ...string) []string {
	var found []string
	for _, d := range dirs {
		filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && (strings.HasSuffix(p, ".tmp") || strings.Contains(e.Name(), ".imgbake-") || strings.Contains(e.Name(), ".part")) {
				found = append(found, p)
			}
			return nil
		})
	}
	return found
}

// TestBuildKilledCLI runs the imgbake binary's build and kills it (SIGKILL,
// as a power cut or the OOM killer would) in each phase: preparing a
// compressed base, writing the image, writing the .bmap and manifest and
// switching them in, compressing. After each kill the base is
// byte-identical and out/ holds the previous set (or nothing before the
// first build), or, when the kill landed late, the new set or (between the
// renames of the switch) a set that verify refuses as mixed; the next build
// succeeds, its set verifies, and no temporary file is left in out/ or the
// cache.
func TestBuildKilledCLI(t *testing.T) {
	fixture.RequireTools(t, "zstd")
	bin := imgbakeBinary(t)
	srv := fakeRelease(t, map[string][]byte{"arm64": crossELF(t, "arm64")})
	// The release as the build sees it: the k3s binary stalls half-way
	// while stall is set.
	var stall atomic.Bool
	rel := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := http.Get(srv.URL + r.URL.EscapedPath())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			w.WriteHeader(resp.StatusCode)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if stall.Load() && strings.HasSuffix(r.URL.Path, "/k3s-arm64") {
			w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			<-r.Context().Done() // until the build is killed
			return
		}
		w.Write(body)
	}))
	t.Cleanup(rel.Close)
	base := fixture.Build(t, fixture.RaspiOSBookwormArm64) // a writable copy: nothing stops a write but imgbake
	zst := fixture.Compress(t, base, "zst")
	dir, cfg, _ := clusterDir(t, base, rel.URL)
	out, cache := filepath.Join(dir, "out"), filepath.Join(dir, "cache")
	baseSum, _ := manifest.FileSHA256(base)
	zstSum, _ := manifest.FileSHA256(zst)

	epoch := 1700000000
	// build runs imgbake build; with a trigger, it kills it (SIGKILL) when
	// the trigger says so, and reports whether it did.
	build := func(args []string, kill *trigger) (killed bool, stderr string) {
		t.Helper()
		epoch++ // each build makes a set of its own
		cmd := exec.Command(bin, append([]string{"build", "-v", "-c", cfg}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+dir, "SOURCE_DATE_EPOCH="+strconv.Itoa(epoch))
		pipe, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		kill9 := func() { once.Do(func() { cmd.Process.Kill(); killed = true }) }
		stop := make(chan struct{})
		polled := make(chan struct{})
		go func() { // a trigger that watches files
			defer close(polled)
			for kill != nil && kill.poll != nil {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
				if kill.poll() {
					kill9()
					return
				}
			}
		}()
		var log strings.Builder
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if kill != nil && kill.line != nil && kill.line(sc.Text()) {
				kill9()
			}
		}
		err = cmd.Wait()
		close(stop)
		<-polled
		if kill == nil && err != nil {
			t.Fatalf("imgbake build %v: %v\n%s", args, err, log.String())
		}
		return killed, log.String()
	}
	verify := func(what, image, target string) {
		t.Helper()
		if code, o, e := run(t, nil, "verify", image, target); code != 0 || !strings.Contains(o, "OK:") {
			t.Fatalf("%s: verify: exit %d %s %s", what, code, o, e)
		}
	}
	img := filepath.Join(out, "k5.img")
	// check checks what a kill left, then that the next build cleans up.
	check := func(what string, args []string, before outputSet, mayMix bool) {
		t.Helper()
		if s, _ := manifest.FileSHA256(base); s != baseSum {
			t.Fatalf("%s: the base image changed", what)
		}
		if s, _ := manifest.FileSHA256(zst); s != zstSum {
			t.Fatalf("%s: the compressed base changed", what)
		}
		t.Logf("%s: left %v", what, leftovers(out, cache))
		now := readSet(t, out)
		switch {
		case now == before && before == outputSet{}:
			// nothing yet: the first build was killed
		case now == before:
			verify(what+": the previous set", img, img)
		case mayMix:
			// A kill between the renames leaves files of two builds: the
			// manifest's check refuses them before anything is flashed.
			code, _, e := run(t, nil, "verify", img, img)
			if code == 0 {
				t.Logf("%s: the kill fell after the switch: out/ holds the new set", what)
			} else if !strings.Contains(e, "from different builds") || !strings.Contains(e, "build the node again") {
				t.Fatalf("%s: out/ holds a set that is neither the previous one nor refused as mixed: %s", what, e)
			} else {
				t.Logf("%s: the kill fell between renames; verify refuses the mix", what)
			}
		default:
			t.Fatalf("%s: out/ changed (%v -> %v) by a build killed before it switched the files", what, before, now)
		}
		build(args, nil)
		if l := leftovers(out, cache); len(l) > 0 {
			t.Fatalf("%s: temporary files left after the next build: %v", what, l)
		}
		verify(what+": the next build's set", img, img)
	}
	line := func(msg string, delay time.Duration) *trigger {
		return &trigger{line: func(l string) bool {
			if strings.Contains(l, "msg=\""+msg+"\"") {
				time.Sleep(delay)
				return true
			}
			return false
		}}
	}

	// The first build, from the compressed base, killed while it
	// decompresses it into the cache: no output at all. Then one killed
	// while it downloads k3s.
	zstArgs := []string{"--base", zst, "k5"}
	inCache := func(sub string) *trigger {
		return &trigger{poll: func() bool { return len(leftovers(filepath.Join(cache, sub))) > 0 }}
	}
	if killed, log := build(zstArgs, inCache("base")); !killed {
		t.Fatalf("the build ended before it decompressed the base:\n%s", log)
	}
	check("killed while preparing the base", zstArgs, outputSet{}, false)
	os.RemoveAll(filepath.Join(cache, "k3s"))
	stall.Store(true)
	before := readSet(t, out)
	if killed, log := build([]string{"k5"}, inCache("k3s")); !killed {
		t.Fatalf("the build ended before it downloaded k3s:\n%s", log)
	}
	stall.Store(false)
	check("killed while downloading k3s", []string{"k5"}, before, false)

	// From here on the kill may land later than its trigger on a loaded
	// machine, up to after the switch: whatever the moment, out/ holds the
	// previous set, the new one, or a mix that verify refuses.
	for _, c := range []struct {
		what   string
		kill   *trigger
		mayMix bool
	}{
		{"killed while writing the image", &trigger{poll: func() bool { return len(leftovers(out)) > 0 }}, true},
		{"killed while applying the plan", line("copied base image", 0), true},
		{"killed while writing the bmap and manifest", line("applied plan", 0), true},
		{"killed while switching the files in", line("computed bmap and checksum", 0), true},
		{"killed once the manifest is written, before or while switching", &trigger{poll: func() bool {
			for _, l := range leftovers(out) {
				if strings.HasSuffix(l, ".json.tmp") {
					return true
				}
			}
			return false
		}}, true},
	} {
		before := readSet(t, out)
		if killed, log := build([]string{"k5"}, c.kill); !killed {
			t.Fatalf("%s: the build ended before the kill:\n%s", c.what, log)
		}
		check(c.what, []string{"k5"}, before, c.mayMix)
	}

	// Killed while compressing, into a new output directory: it stays
	// without an image; the next build's .zst verifies against its raw
	// content.
	out2 := filepath.Join(dir, "out-zst")
	zargs := []string{"--compress", "zst", "--out", out2, "k5"}
	if killed, log := build(zargs, line("compressing image", 0)); !killed {
		t.Fatalf("the build ended before it compressed:\n%s", log)
	}
	verifyZst := func(what string) {
		t.Helper()
		raw := filepath.Join(t.TempDir(), "k5.img")
		fixture.Run(t, "zstd", "-q", "-d", filepath.Join(out2, "k5.img.zst"), "-o", raw)
		verify(what, filepath.Join(out2, "k5.img.zst"), raw)
	}
	if _, err := os.Stat(filepath.Join(out2, "k5.img.zst")); err == nil {
		verifyZst("killed while compressing, after the switch: its set")
	} else {
		for _, f := range []string{"k5.img", "k5.img.bmap", "k5.img.manifest.json"} {
			if _, err := os.Stat(filepath.Join(out2, f)); err == nil {
				t.Errorf("killed while compressing: %s exists, without k5.img.zst", f)
			}
		}
	}
	build(zargs, nil)
	if l := leftovers(out2, cache); len(l) > 0 {
		t.Fatalf("killed while compressing: temporary files left after the next build: %v", l)
	}
	verifyZst("killed while compressing: the next build's set")
}

// trigger says when to kill a build: at a line of its stderr, or when a
// poll of its files (every millisecond) says so.
type trigger struct {
	line func(string) bool
	poll func() bool
}
