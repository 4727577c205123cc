package image

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/fixture"
)

// lyingBase returns a raw copy of the fixture, changed by damage (given
// the image path and its inspected layout) before it is prepared.
func lyingBase(t *testing.T, name string, damage func(img string, info *Info)) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "base.img")
	run(t, "cp", "--sparse=always", fixture.Cached(t, name), img)
	if err := os.Chmod(img, 0o644); err != nil {
		t.Fatal(err)
	}
	info, err := Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	damage(img, info)
	return img
}

func rootPart(t *testing.T, info *Info) Partition {
	t.Helper()
	p, ok := info.Partition(info.RootPartition)
	if !ok {
		t.Fatal("no root partition")
	}
	return p
}

// statMode returns the octal permission bits debugfs shows for p.
func statMode(t *testing.T, img string, part Partition, p string) string {
	t.Helper()
	out := debugfsR(t, img, part, "stat "+p)
	i := strings.Index(out, "Mode:")
	if i < 0 {
		t.Fatalf("debugfs stat %s: %s", p, out)
	}
	return strings.Fields(out[i+len("Mode:"):])[0]
}

// TestBuildReplacesSymlinkedDirs: a base whose directories that imgbake
// creates are symlinks elsewhere (/etc/rancher -> /tmp, /etc/rancher/node
// -> /etc, an escape attempt through ..) keeps /tmp and /etc as they were;
// imgbake's directories are real directories with their own modes.
func TestBuildReplacesSymlinkedDirs(t *testing.T) {
	fixture.RequireTools(t, "debugfs", "fsck.vfat")
	for name, links := range map[string][][2]string{
		"rancher to tmp":  {{"/etc/rancher", "/tmp"}},
		"node to etc":     {{"/etc/rancher/node", "/etc"}},
		"escape via dots": {{"/etc/rancher", "../../../../../../tmp"}},
	} {
		t.Run(name, func(t *testing.T) {
			img := lyingBase(t, fixture.RaspiOSBookwormArm64, func(img string, info *Info) {
				rp := rootPart(t, info)
				for _, l := range links {
					if filepath.Dir(l[0]) != "/etc" {
						debugfsW(t, img, rp, "mkdir "+filepath.Dir(l[0]))
					}
					debugfsW(t, img, rp, "symlink "+l[0]+" "+l[1])
				}
			})
			base, err := PrepareBase(context.Background(), img, filepath.Join(t.TempDir(), "cache"), PrepareOptions{})
			if err != nil {
				t.Fatal(err)
			}
			p := &plan.Plan{Entries: []plan.Entry{
				{Part: plan.Root, Path: "/etc/rancher", Kind: plan.Dir, Mode: 0o755},
				{Part: plan.Root, Path: "/etc/rancher/k3s", Kind: plan.Dir, Mode: 0o755},
				{Part: plan.Root, Path: "/etc/rancher/node", Kind: plan.Dir, Mode: 0o700},
				{Part: plan.Root, Path: "/etc/rancher/node/password", Kind: plan.File, Mode: 0o600, Data: []byte("secret"), Secret: true},
			}}
			out := filepath.Join(t.TempDir(), "k5.img")
			if _, err := Build(context.Background(), BuildOptions{Base: base, Output: out, Plan: p, Epoch: time.Unix(1700000000, 0)}); err != nil {
				t.Fatal(err)
			}
			info := checkImage(t, out)
			rp := rootPart(t, info)
			for path, want := range map[string]string{"/tmp": "01777", "/etc": "0755", "/etc/rancher": "0755", "/etc/rancher/node": "0700"} {
				if got := statMode(t, out, rp, path); got != want {
					t.Errorf("%s: mode %s, want %s", path, got, want)
				}
			}
			if out := debugfsR(t, out, rp, "stat /tmp/node/password"); !strings.Contains(out, "File not found") {
				t.Errorf("the secret went through the symlink into /tmp:\n%s", out)
			}
		})
	}
}
