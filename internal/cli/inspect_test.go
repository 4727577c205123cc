package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
)

func TestInspect(t *testing.T) {
	fixture.RequireTools(t)
	img := fixture.Cached(t, fixture.RaspiOSBookwormArm64)
	env := map[string]string{"HOME": t.TempDir()}
	code, out, errOut := run(t, env, "inspect", img)
	if code != 0 {
		t.Fatalf("inspect: %d %s", code, errOut)
	}
	for _, want := range []string{"raspios bookworm", "arm64", "/boot/firmware", "NetworkManager"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	code, out, errOut = run(t, env, "inspect", "--json", img)
	if code != 0 {
		t.Fatalf("inspect --json: %d %s", code, errOut)
	}
	var v struct {
		OS struct {
			Family, Arch string
		} `json:"os"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.OS.Family != "raspios" || v.OS.Arch != "arm64" {
		t.Errorf("inspect --json: %v %+v\n%s", err, v, out)
	}
	if code, _, _ := run(t, env, "inspect"); code != 2 {
		t.Errorf("inspect without image: exit %d, want 2", code)
	}
	if code, _, e := run(t, env, "inspect", "/nonexistent.img"); code != 1 || e == "" {
		t.Errorf("inspect missing file: exit %d %q", code, e)
	}
}
