package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/image/bmap"
	"github.com/imgbake/imgbake/image/flash"
)

// TestFlashManyFiles writes several nodes at once to files: node=target
// pairs, then --all (the next nodes the flash log does not hold); a
// target that cannot be opened fails only its node; duplicate and existing
// targets are refused before anything is written.
func TestFlashManyFiles(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "imgbake.yaml")
	if code, _, e := runWith(t, "", "init", "--config", cfg); code != 0 {
		t.Fatalf("init: %s", e)
	}
	maps := map[string]*bmap.Map{}
	images := map[string]string{}
	for _, n := range []string{"k1", "k2", "k3"} {
		images[n], maps[n] = flashImage(t, dir, n)
	}
	card := func(name string) string { return filepath.Join(dir, name) }
	flashMany := func(stdin string, args ...string) (int, string, string) {
		return runWith(t, stdin, append([]string{"flash", "--config", cfg, "--allow-file"}, args...)...)
	}

	// Refused before anything is written: the same target twice, and an
	// existing file among new ones.
	if code, _, e := flashMany("", "k1="+card("a.img"), "k2="+card("a.img")); code != 2 || !strings.Contains(e, "one card per node") {
		t.Errorf("same target twice: exit %d %q", code, e)
	}
	randomFile(t, card("old.img"), 1<<20)
	if code, _, e := flashMany("", "--yes", "k1="+card("a.img"), "k2="+card("old.img")); code != 1 || !strings.Contains(e, "--overwrite-file") {
		t.Errorf("an existing file among the targets: exit %d %q", code, e)
	}
	if _, err := os.Stat(card("a.img")); err == nil {
		t.Fatal("a card was written although another was refused")
	}

	// Two cards; a third whose file cannot be created fails alone.
	code, out, e := flashMany("", "k1="+card("a.img"), "k2="+card("b.img"), "k3="+card("no/such/dir/c.img"))
	if code != 1 || !strings.Contains(e, "1 of 3 card(s) failed (k3)") {
		t.Errorf("flash with one bad target: exit %d %q %q", code, out, e)
	}
	for _, want := range []string{`k1 +` + card("a.img") + ` +k1.img \(.* verified\)`, `k2 +` + card("b.img") + ` +k2.img`, `k3 +.*what it held before \(nothing written\)`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	for n, c := range map[string]string{"k1": "a.img", "k2": "b.img"} {
		if !mappedEqual(t, images[n], card(c), maps[n]) {
			t.Errorf("%s: %s differs from the image", n, c)
		}
	}
	// --all takes the next unflashed nodes: only k3 is left.
	if code, _, e := flashMany("", "--all", card("c.img"), card("d.img")); code != 1 || !strings.Contains(e, "only 1 built node(s) are not flashed yet (k3") {
		t.Errorf("--all with more devices than nodes: exit %d %q", code, e)
	}
	if code, out, e := flashMany("", "--all", card("c.img")); code != 0 || !strings.Contains(out, "k3.img") || !mappedEqual(t, images["k3"], card("c.img"), maps["k3"]) {
		t.Errorf("--all: exit %d %q %q", code, out, e)
	}
	recs, err := flash.ReadHistory(filepath.Join(dir, "out"))
	if err != nil || len(recs) != 4 || !recs[0].OK || recs[2].OK || recs[2].Node != "k3" || !recs[3].OK || !recs[3].Verified {
		t.Errorf("flash log: %+v %v", recs, err)
	}
	// Rebuilding a node makes it unflashed again.
	flashImage(t, dir, "k1")
	os.WriteFile(images["k1"]+".manifest.json", []byte(`{"format_version": 1}`), 0o644)
	if code, out, e := flashMany("", "--all", card("e.img")); code != 0 || !strings.Contains(out, "k1.img") {
		t.Errorf("--all after a rebuild of k1: exit %d %q %q", code, out, e)
	}
}

// TestFlashManyLoopDevices writes three loop devices at once, one of which
// fails part way (its backing file lives on a 2 MiB tmpfs): that node
// fails and is reported as holding an incomplete image, the others are
// written and verified.
func TestFlashManyLoopDevices(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices and a tmpfs")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "imgbake.yaml")
	if code, _, e := runWith(t, "", "init", "--config", cfg); code != 0 {
		t.Fatalf("init: %s", e)
	}
	small := filepath.Join(dir, "small")
	os.Mkdir(small, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", small).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", small).Run()
	var loops []string
	for i, backing := range []string{filepath.Join(dir, "b1"), filepath.Join(dir, "b2"), filepath.Join(small, "b3")} {
		if i < 2 {
			randomFile(t, backing, 32<<20)
		} else if err := os.Truncate(backing, 0); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		} else if f, err := os.Create(backing); err != nil || f.Truncate(32<<20) != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("losetup", "-f", "--show", backing).Output()
		if err != nil {
			t.Skipf("losetup: %v", err)
		}
		loop := strings.TrimSpace(string(out))
		defer exec.Command("losetup", "-d", loop).Run()
		loops = append(loops, loop)
	}
	images := map[string]string{}
	maps := map[string]*bmap.Map{}
	for _, n := range []string{"k1", "k2", "k3"} {
		images[n], maps[n] = flashImage(t, dir, n)
	}
	code, out, e := runWith(t, "no\n", "flash", "--config", cfg, "--force", "k1="+loops[0], "k2="+loops[1], "k3="+loops[2])
	if code != 1 || !strings.Contains(e, "not confirmed") || strings.Count(e, "/dev/loop") != 3 {
		t.Fatalf("answer no: exit %d %q %q; want every device named in the one question", code, out, e)
	}
	code, out, e = runWith(t, "yes\n", "flash", "--config", cfg, "--force", "k1="+loops[0], "k2="+loops[1], "k3="+loops[2])
	if code != 1 || !strings.Contains(e, "1 of 3 card(s) failed (k3)") {
		t.Errorf("flash with a failing card: exit %d %q %q", code, out, e)
	}
	if !regexp.MustCompile(`k3 +` + loops[2] + ` +an incomplete image that will not boot`).MatchString(out) {
		t.Errorf("summary does not say k3's card is incomplete:\n%s", out)
	}
	for i, n := range []string{"k1", "k2"} {
		if !strings.Contains(out, n+" ") || !mappedEqual(t, images[n], loops[i], maps[n]) {
			t.Errorf("%s on %s: not written right\n%s", n, loops[i], out)
		}
	}
}
