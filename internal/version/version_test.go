package version

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	if s := String(); !strings.HasPrefix(s, "dev ") && !strings.HasPrefix(s, "v") {
		t.Errorf("String() = %q, want dev or a v-tag", s)
	}
}

// TestStampedBinary builds imgbake the way `make build` and `make release`
// do, with the version and commit set by -ldflags -X, and checks that
// `imgbake version` prints them with the Go version.
func TestStampedBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds imgbake (-short)")
	}
	const (
		ver    = "v9.8.7-test"
		commit = "0123456789abcdef0123456789abcdef01234567"
	)
	bin := filepath.Join(t.TempDir(), "imgbake")
	pkg := "github.com/imgbake/imgbake/internal/version"
	build := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-s -w -buildid= -X "+pkg+".Version="+ver+" -X "+pkg+".Commit="+commit,
		"-o", bin, "github.com/imgbake/imgbake/cmd/imgbake")
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("imgbake version: %v\n%s", err, out)
	}
	want := "imgbake " + ver + " (" + commit[:12] + ", " + runtime.Version() + ")\n"
	if string(out) != want {
		t.Errorf("imgbake version printed %q, want %q", out, want)
	}
}
