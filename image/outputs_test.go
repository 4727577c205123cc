package image

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgbake/imgbake/image/manifest"
	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/fixture"
)

// nodePlan is a small plan whose content depends on token, so that two
// builds give different images.
func nodePlan(token string) *plan.Plan {
	return &plan.Plan{Entries: []plan.Entry{
		{Part: plan.Root, Path: "/etc/rancher/k3s", Kind: plan.Dir, Mode: 0o755},
		{Part: plan.Root, Path: "/etc/rancher/k3s/token", Kind: plan.File, Mode: 0o600, Data: []byte(token), Secret: true},
		{Part: plan.Boot, Path: "/imgbake/node.txt", Kind: plan.File, Data: []byte("node: k5 " + token + "\n")},
	}}
}

// snapshot reads every file of dir but the lock.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() == ".imgbake.lock" || e.IsDir() {
			continue
		}
		out[e.Name()] = mustRead(t, filepath.Join(dir, e.Name()))
	}
	return out
}

func sameFiles(t *testing.T, got, want map[string][]byte) {
	t.Helper()
	if len(got) != len(want) {
		var names []string
		for n := range got {
			names = append(names, n)
		}
		t.Fatalf("files %v, want the %d earlier ones", names, len(want))
	}
	for n, w := range want {
		if !bytes.Equal(got[n], w) {
			t.Fatalf("%s changed", n)
		}
	}
}

func buildNode(ctx context.Context, base *Base, out, token string) error {
	_, err := Build(ctx, BuildOptions{Base: base, Output: out, Plan: nodePlan(token), Epoch: time.Unix(1700000000, 0)})
	return err
}

// TestOutputsReplacedAsASet: a later rename that fails, or an interrupt
// at any phase, leaves the previous image, .bmap and manifest exactly as
// they were and no temporary file.
func TestOutputsReplacedAsASet(t *testing.T) {
	base := prepared(t, fixture.RaspiOSBookwormArm64, false)
	dir := t.TempDir()
	out := filepath.Join(dir, "k5.img")
	if err := buildNode(context.Background(), base, out, "first"); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)

	t.Run("manifest rename fails", func(t *testing.T) {
		if err := os.Rename(out+".manifest.json", out+".manifest.json.keep"); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(out+".manifest.json/x", 0o755); err != nil {
			t.Fatal(err)
		}
		err := buildNode(context.Background(), base, out, "second")
		if err == nil || !strings.Contains(err.Error(), "the previous files are kept") {
			t.Fatalf("build with a directory in the manifest's place: %v", err)
		}
		os.RemoveAll(out + ".manifest.json")
		os.Rename(out+".manifest.json.keep", out+".manifest.json")
		sameFiles(t, snapshot(t, dir), before)
	})
	for _, at := range []string{"copy", "apply", "bmap", "commit", "rename k5.img", "rename k5.img.bmap", "rename k5.img.manifest.json"} {
		t.Run("interrupted at "+at, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ctx = context.WithValue(ctx, phaseKey{}, func(p string) {
				if p == at {
					cancel()
				}
			})
			if err := buildNode(ctx, base, out, "third"); !errors.Is(err, context.Canceled) {
				t.Fatalf("interrupted build: %v", err)
			}
			sameFiles(t, snapshot(t, dir), before)
		})
	}
}

// TestBuildKilled kills (SIGKILL) a real build process at each phase and
// checks what a user then has: the previous set, or a set whose manifest
// check refuses the mix before flashing; then the next build removes the
// dead build's temporary files and succeeds.
func TestBuildKilled(t *testing.T) {
	if os.Getenv("IMGBAKE_KILLED_HELPER") != "" {
		return
	}
	base := prepared(t, fixture.RaspiOSBookwormArm64, false)
	for _, at := range []string{"copy", "apply", "bmap", "commit", "rename k5.img.bmap", "rename k5.img.manifest.json"} {
		t.Run(at, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "k5.img")
			if err := buildNode(context.Background(), base, out, "first"); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, dir)
			cmd := exec.Command(os.Args[0], "-test.run=^TestBuildKilledHelper$", "-test.v")
			cmd.Env = append(os.Environ(), "IMGBAKE_KILLED_HELPER="+at, "IMGBAKE_KILLED_BASE="+base.Path, "IMGBAKE_KILLED_OUT="+out)
			stdout, _ := cmd.StdoutPipe()
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(stdout)
			reached := false
			for sc.Scan() {
				if sc.Text() == "PHASE "+at {
					reached = true
					break
				}
			}
			cmd.Process.Kill()
			cmd.Wait()
			if !reached {
				t.Fatalf("the build never reached %s", at)
			}
			after := snapshot(t, dir)
			var temps []string
			for n := range after {
				if strings.Contains(n, tempMarker) {
					temps = append(temps, n)
					delete(after, n)
				}
			}
			if len(temps) == 0 && at != "copy" {
				t.Fatalf("no temporary file left by a build killed at %s: the cleanup below is not exercised", at)
			}
			// Whatever the kill left, flash's check says whether the set is
			// usable: the earlier set passes; a mix is refused.
			m, err := manifest.Load(out + ".manifest.json")
			if err != nil {
				t.Fatal(err)
			}
			setErr := m.CheckSet(out, out+".bmap")
			mixed := !bytes.Equal(after["k5.img"], before["k5.img"]) || !bytes.Equal(after["k5.img.bmap"], before["k5.img.bmap"])
			if bytes.Equal(after["k5.img.manifest.json"], before["k5.img.manifest.json"]) && mixed {
				if setErr == nil || !strings.Contains(setErr.Error(), "from different builds") {
					t.Fatalf("new files beside the old manifest pass the set check: %v", setErr)
				}
			} else if setErr != nil {
				t.Fatalf("consistent set refused: %v", setErr)
			}
			if err := buildNode(context.Background(), base, out, "fourth"); err != nil {
				t.Fatal(err)
			}
			for n := range snapshot(t, dir) {
				if strings.Contains(n, tempMarker) {
					t.Errorf("temporary file %s of the killed build left after the next build", n)
				}
			}
			m, _ = manifest.Load(out + ".manifest.json")
			if err := m.CheckSet(out, out+".bmap"); err != nil {
				t.Fatalf("set after rebuilding: %v", err)
			}
		})
	}
}

// TestBuildKilledHelper is the process TestBuildKilled kills: it builds and
// stops at the phase it is given, saying so on stdout.
func TestBuildKilledHelper(t *testing.T) {
	at := os.Getenv("IMGBAKE_KILLED_HELPER")
	if at == "" {
		t.Skip("run by TestBuildKilled")
	}
	base := &Base{Path: os.Getenv("IMGBAKE_KILLED_BASE")}
	fi, err := os.Stat(base.Path)
	if err != nil {
		t.Fatal(err)
	}
	base.Size, base.Format = fi.Size(), "raw"
	ctx := context.WithValue(context.Background(), phaseKey{}, func(p string) {
		if p == at {
			fmt.Printf("PHASE %s\n", p)
			os.Stdout.Sync()
			time.Sleep(time.Hour) // until killed
		}
	})
	buildNode(ctx, base, os.Getenv("IMGBAKE_KILLED_OUT"), "second")
}

// TestOutputDirLocked: while another process holds an output directory's
// lock, a build into it is refused, saying why; builds in one process share
// it.
func TestOutputDirLocked(t *testing.T) {
	base := prepared(t, fixture.RaspiOSBookwormArm64, false)
	dir := t.TempDir()
	out := filepath.Join(dir, "k5.img")
	// An open file description of its own conflicts like another process.
	f, err := os.OpenFile(filepath.Join(dir, ".imgbake.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscallFlock(f); err != nil {
		t.Fatal(err)
	}
	err = buildNode(context.Background(), base, out, "x")
	if err == nil || !strings.Contains(err.Error(), "another imgbake is writing into") {
		t.Fatalf("build into a locked directory: %v", err)
	}
	f.Close()
	if err := buildNode(context.Background(), base, out, "x"); err != nil {
		t.Fatalf("build after the lock was released: %v", err)
	}
}

func syscallFlock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
