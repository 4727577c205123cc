package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
)

// lineOf returns the 1-based line of the first line of file containing s.
func lineOf(t *testing.T, file, s string) int {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	t.Fatalf("%s has no line with %q", file, s)
	return 0
}

// localBuild makes a cluster on the Bookworm arm64 fixture whose release
// URL is unreachable, and a local arm64 k3s binary for --k3s-binary.
func localBuild(t *testing.T) (dir, cfg, bin string) {
	t.Helper()
	fixture.RequireTools(t)
	base := fixture.Cached(t, fixture.RaspiOSBookwormArm64)
	dir, cfg, _ = clusterDir(t, base, "http://127.0.0.1:1")
	bin = filepath.Join(dir, "k3s-arm64")
	if err := os.WriteFile(bin, crossELF(t, "arm64"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, cfg, bin
}

// TestBuildRefusesARMv6WithLine: an ARMv6 model is a problem in the cluster
// file, so it is reported as file:line: field like every other one, before
// the base image is even looked at.
func TestBuildRefusesARMv6WithLine(t *testing.T) {
	dir, cfg, _ := clusterDir(t, filepath.Join(t.TempDir(), "no-such-base.img"), "http://127.0.0.1:1")
	want := fmt.Sprintf("%s:%d: nodes[2].model: ", cfg, lineOf(t, cfg, "model: pi0w"))
	code, _, e := run(t, map[string]string{"HOME": dir}, "build", "-c", cfg, "zero")
	if code != 1 || !strings.Contains(e, want) || !strings.Contains(e, "ARMv7") {
		t.Errorf("pi0w: exit %d, %q, want %q", code, e, want)
	}
	code, _, e = run(t, map[string]string{"HOME": dir}, "build", "-c", cfg, "--all")
	if code != 1 || !strings.Contains(e, want) {
		t.Errorf("pi0w with --all: exit %d, %q, want %q", code, e, want)
	}
}

// TestBuildInterrupted: Ctrl-C (a cancelled context) during a build says
// so instead of "context canceled", leaves an earlier image as it was and
// leaves no temporary files in the output directory.
func TestBuildInterrupted(t *testing.T) {
	dir, cfg, bin := localBuild(t)
	env := map[string]string{"HOME": dir}
	args := []string{"build", "-c", cfg, "--k3s-binary", bin, "k5"}
	if code, _, e := run(t, env, args...); code != 0 {
		t.Fatalf("build: %d %s", code, e)
	}
	img := filepath.Join(dir, "out", "k5.img")
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var o, e bytes.Buffer
	app := &App{Stdout: &o, Stderr: &e, Env: func(k string) string { return env[k] }}
	code := app.Execute(ctx, args)
	if code != 1 || strings.Contains(e.String(), "context canceled") || !strings.Contains(e.String(), "interrupted") ||
		!strings.Contains(e.String(), img+" was not written") {
		t.Errorf("interrupted build: exit %d, stderr %q", code, e.String())
	}
	if o.Len() != 0 {
		t.Errorf("stdout: %q", o.String())
	}
	after, err := os.ReadFile(img)
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("the earlier image changed (%v)", err)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "out"))
	for _, ent := range ents {
		if (!strings.HasPrefix(ent.Name(), "k5.img") || strings.HasSuffix(ent.Name(), ".tmp")) && ent.Name() != ".imgbake.lock" {
			t.Errorf("left in out/: %s", ent.Name())
		}
	}
}

// TestBuildInterruptedBeforeImages: Ctrl-C before any image is built (while
// the base is prepared or k3s downloaded) says so too.
func TestBuildInterruptedBeforeImages(t *testing.T) {
	fixture.RequireTools(t)
	base := fixture.Cached(t, fixture.RaspiOSBookwormArm64)
	srv := fakeRelease(t, map[string][]byte{"arm64": crossELF(t, "arm64")})
	dir, cfg, _ := clusterDir(t, base, srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var o, e bytes.Buffer
	app := &App{Stdout: &o, Stderr: &e, Env: func(k string) string { return map[string]string{"HOME": dir}[k] }}
	code := app.Execute(ctx, []string{"build", "-c", cfg, "k5"})
	if code != 1 || strings.Contains(e.String(), "context canceled") || !strings.Contains(e.String(), "interrupted while") ||
		!strings.Contains(e.String(), "no image was written") {
		t.Errorf("interrupted build: exit %d, stderr %q", code, e.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
		t.Error("out/ was created")
	}
}

// TestFlashQuietWithoutTerminal: like every other command, flash draws no
// progress when stderr is not a terminal (a log file, CI): it says what it
// writes and where, and reports the result on stdout.
func TestFlashQuietWithoutTerminal(t *testing.T) {
	dir := t.TempDir()
	image, _ := flashImage(t, dir, "k5")
	target := filepath.Join(dir, "card.img")
	code, out, errOut := runWith(t, "", "flash", "--allow-file", image, target)
	if code != 0 || !strings.Contains(out, "Verified") {
		t.Fatalf("flash: exit %d %q %q", code, out, errOut)
	}
	if lines := strings.Split(strings.TrimSpace(errOut), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "Writing k5.img to ") {
		t.Errorf("stderr without a terminal: %q; want only the Writing line", errOut)
	}
	code, out, errOut = runWith(t, "", "verify", image, target)
	if code != 0 || errOut != "" {
		t.Errorf("verify: exit %d %q %q", code, out, errOut)
	}
}

// TestBuildCompressedAfterRaw: a compressed build names what its checksum
// is of (the raw image, not the .zst file), warns that the raw image of an
// earlier build is now stale (its .bmap and manifest were replaced), and
// flash by node name takes the image the manifest describes.
func TestBuildCompressedAfterRaw(t *testing.T) {
	dir, cfg, bin := localBuild(t)
	env := map[string]string{"HOME": dir}
	if code, _, e := run(t, env, "build", "-c", cfg, "--k3s-binary", bin, "k5"); code != 0 {
		t.Fatalf("build: %d %s", code, e)
	}
	// Change the node so that the two builds differ.
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, bytes.Replace(data, []byte("example.com/disk: ssd"), []byte("example.com/disk: nvme"), 1), 0o644)
	code, out, e := run(t, env, "build", "-c", cfg, "--k3s-binary", bin, "--compress", "zst", "k5")
	if code != 0 {
		t.Fatalf("build --compress zst: %d %s", code, e)
	}
	raw := filepath.Join(dir, "out", "k5.img")
	if !strings.Contains(out, raw+".zst (") || !strings.Contains(out, "raw image ") {
		t.Errorf("stdout %q: want the .zst named and the checksum said to be the raw image's", out)
	}
	if !strings.Contains(e, "warning: "+raw+" is from an earlier build") {
		t.Errorf("no stale image warning: %q", e)
	}
	files, err := (&App{}).resolveImage(&globals{config: cfg}, "k5")
	if err != nil || files.image != raw+".zst" {
		t.Errorf("flash k5 would write %q (%v), want the .zst the manifest describes", files.image, err)
	}
}

// TestBuildCompressedAfterSameRaw: compressing an unchanged node keeps the
// raw image of the earlier build, which is the same image: no warning, and
// flash by node name takes the raw image (nothing to decompress).
func TestBuildCompressedAfterSameRaw(t *testing.T) {
	dir, cfg, bin := localBuild(t)
	env := map[string]string{"HOME": dir}
	if code, _, e := run(t, env, "build", "-c", cfg, "--k3s-binary", bin, "k5"); code != 0 {
		t.Fatalf("build: %d %s", code, e)
	}
	code, out, e := run(t, env, "build", "-c", cfg, "--k3s-binary", bin, "--compress", "zst", "k5")
	raw := filepath.Join(dir, "out", "k5.img")
	if code != 0 || strings.Contains(e, "earlier build") || !strings.Contains(out, raw+" is the same image") {
		t.Errorf("build --compress zst of an unchanged node: exit %d, stdout %q, stderr %q", code, out, e)
	}
	files, err := (&App{}).resolveImage(&globals{config: cfg}, "k5")
	if err != nil || files.image != raw {
		t.Errorf("flash k5 would write %q (%v), want the raw image", files.image, err)
	}
}

// TestBuildExpandsTilde: ~/ in the cluster file's paths is the user's home,
// as for cache-dir (and as the README's examples write them), not a
// directory named "~".
func TestBuildExpandsTilde(t *testing.T) {
	fixture.RequireTools(t)
	base := fixture.Cached(t, fixture.RaspiOSBookwormArm64)
	home := t.TempDir()
	if err := os.Symlink(base, filepath.Join(home, "base.img")); err != nil {
		t.Fatal(err)
	}
	dir, cfg, _ := clusterDir(t, "~/base.img", "http://127.0.0.1:1")
	data, _ := os.ReadFile(cfg)
	data = append(data, []byte("output-dir: ~/images\nsecrets-file: ~/secrets.yaml\n")...)
	os.WriteFile(cfg, data, 0o644)
	if err := os.Rename(filepath.Join(dir, "imgbake.secrets.yaml"), filepath.Join(home, "secrets.yaml")); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "k3s-arm64")
	os.WriteFile(bin, crossELF(t, "arm64"), 0o755)
	code, out, e := run(t, map[string]string{"HOME": home}, "build", "-c", cfg, "--k3s-binary", bin, "k5")
	if want := filepath.Join(home, "images", "k5.img"); code != 0 || !strings.Contains(out, want+" (") {
		t.Fatalf("build: exit %d %q %q; want %s", code, out, e, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "~")); err == nil {
		t.Error(`a directory named "~" was made`)
	}
	files, err := (&App{Env: func(k string) string { return map[string]string{"HOME": home}[k] }}).resolveImage(&globals{config: cfg}, "k5")
	if err != nil || files.image != filepath.Join(home, "images", "k5.img") {
		t.Errorf("flash k5 finds %q (%v)", files.image, err)
	}
}

// TestFlashNewFileIsPrivate: a file flash creates holds the image, and so
// the join token and node password: only its owner may read it.
func TestFlashNewFileIsPrivate(t *testing.T) {
	dir := t.TempDir()
	image, _ := flashImage(t, dir, "k5")
	target := filepath.Join(dir, "copy.img")
	if code, out, e := runWith(t, "", "flash", "--allow-file", image, target); code != 0 {
		t.Fatalf("flash: exit %d %q %q", code, out, e)
	}
	if st, err := os.Stat(target); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("new target file: %v %v, want mode 0600", st.Mode(), err)
	}
}

// TestNotADiskImage: random bytes as the base give one message that names
// the file once and says what it lacks.
func TestNotADiskImage(t *testing.T) {
	dir, cfg, _ := clusterDir(t, "", "http://127.0.0.1:1")
	base := filepath.Join(dir, "random.img")
	randomFile(t, base, 4<<20)
	for _, args := range [][]string{{"build", "-c", cfg, "--base", base, "k5"}, {"inspect", base}} {
		code, _, e := run(t, map[string]string{"HOME": dir}, args...)
		if code != 1 || strings.Count(e, base) != 1 || !strings.Contains(e, "no partition table") || strings.Contains(e, "context canceled") {
			t.Errorf("%s: exit %d, %q", args[0], code, e)
		}
	}
}

// TestBuildSSHUser: SSH keys for a user the base image does not have are
// refused (nobody could log in with them), naming the cluster file's line;
// for a user it has, authorized_keys belongs to that user's uid and gid
// from the image's /etc/passwd, not to a guessed 1000.
func TestBuildSSHUser(t *testing.T) {
	fixture.RequireTools(t, "debugfs")
	dir, cfg, bin := localBuild(t)
	env := map[string]string{"HOME": dir}
	data, _ := os.ReadFile(cfg)
	withUser := bytes.Replace(data, []byte("ssh:\n  authorized-keys:"), []byte("ssh:\n  user: pi\n  authorized-keys:"), 1)
	os.WriteFile(cfg, withUser, 0o644)
	want := fmt.Sprintf("%s:%d: ssh.user: the base image has no user \"pi\"", cfg, lineOf(t, cfg, "user: pi"))
	if code, _, e := run(t, env, "build", "-c", cfg, "--k3s-binary", bin, "k5"); code != 1 || !strings.Contains(e, want) {
		t.Errorf("unknown user: exit %d %q, want %q", code, e, want)
	}

	// A base with user pi (uid 1001): an image baked with a profile that
	// writes /etc/passwd, built as root.
	os.WriteFile(cfg, data, 0o644)
	os.MkdirAll(filepath.Join(dir, "profiles"), 0o755)
	os.WriteFile(filepath.Join(dir, "profiles", "withpi.yaml"), []byte(`role: agent
files:
  - path: /etc/passwd
    content: |
      root:x:0:0:root:/root:/bin/bash
      pi:x:1001:1002:,,,:/home/pi:/bin/bash
`), 0o644)
	if code, _, e := run(t, env, "build", "-c", cfg, "--k3s-binary", bin, "--profile", "withpi", "-o", filepath.Join(dir, "base"), "k9"); code != 0 {
		t.Fatalf("base with pi: %d %s", code, e)
	}
	os.WriteFile(cfg, withUser, 0o644)
	if code, _, e := run(t, env, "build", "-c", cfg, "--k3s-binary", bin, "--base", filepath.Join(dir, "base", "k9.img"), "k5"); code != 0 {
		t.Fatalf("build with user pi: %d %s", code, e)
	}
	img := filepath.Join(dir, "out", "k5.img")
	root := extract(t, img, partitions(t, img)[1])
	for _, p := range []string{"/home/pi/.ssh", "/home/pi/.ssh/authorized_keys"} {
		if st := debugfsStat(t, root, p); !strings.Contains(st, "User:  1001   Group:  1002") {
			t.Errorf("%s:\n%s", p, st)
		}
	}
}

// TestBuildOutputDirIsPrivate: the images hold the join token and node
// passwords, so an output directory build creates is readable by its owner
// only.
func TestBuildOutputDirIsPrivate(t *testing.T) {
	dir, cfg, bin := localBuild(t)
	out := filepath.Join(dir, "new", "images")
	if code, _, e := run(t, map[string]string{"HOME": dir}, "build", "-c", cfg, "--k3s-binary", bin, "-o", out, "k5"); code != 0 {
		t.Fatalf("build: %d %s", code, e)
	}
	if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("new output directory: %v %v, want mode 0700", st.Mode(), err)
	}
}
