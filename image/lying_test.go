package image

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/fixture"
	"github.com/imgbake/imgbake/internal/testlog"
)

// lyingBase returns a raw copy of the fixture, changed by damage (given
// the image path and its inspected layout) before it is prepared.
func lyingBase(t *testing.T, name string, damage func(img string, info *Info)) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "base.img")
	fixture.Run(t, "cp", "--sparse=always", fixture.Cached(t, name), img)
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

// TestLyingBasesRefused: bases that are damaged or are no image at all are
// refused, before anything is built, with what is wrong in plain words.
func TestLyingBasesRefused(t *testing.T) {
	fixture.RequireTools(t, "debugfs", "zstd", "xz")
	name := fixture.RaspiOSBookwormArm64
	bootOf := func(t *testing.T, info *Info) Partition {
		p, ok := info.Partition(info.BootPartition)
		if !ok {
			t.Fatal("no boot partition")
		}
		return p
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7919 + i/13)
		}
		return b
	}
	writeAt := func(t *testing.T, img string, off int64, data []byte) {
		f, err := os.OpenFile(img, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name   string
		damage func(t *testing.T, img string, info *Info) string // returns the input to use
		want   string
	}{
		{"zeroed FAT boot sector", func(t *testing.T, img string, info *Info) string {
			writeAt(t, img, bootOf(t, info).Start, make([]byte, 512))
			return img
		}, "partition 1 is a FAT partition (type 0x0c) but holds no FAT filesystem: its boot sector is damaged"},
		{"random FAT", func(t *testing.T, img string, info *Info) string {
			bp := bootOf(t, info)
			writeAt(t, img, bp.Start+32*512+64, random(8192)) // RPi OS FAT32: 32 reserved sectors
			return img
		}, "the FAT boot partition 1 is damaged"},
		{"damaged root inode", func(t *testing.T, img string, info *Info) string {
			debugfsW(t, img, rootPart(t, info), "clri <2>")
			return img
		}, "the ext4 filesystem on partition 2 is damaged"},
		{"damaged inode table", func(t *testing.T, img string, info *Info) string {
			rp := rootPart(t, info)
			out := debugfsR(t, img, rp, "imap /etc")
			var blk, off int64
			if _, err := fmt.Sscanf(out[strings.Index(out, "located at block"):], "located at block %d, offset 0x%x", &blk, &off); err != nil {
				t.Fatalf("imap: %v\n%s", err, out)
			}
			writeAt(t, img, rp.Start+blk*4096, random(4096))
			return img
		}, "the ext4 filesystem on partition 2 is damaged"},
		{"used block marked free", func(t *testing.T, img string, info *Info) string {
			rp := rootPart(t, info)
			out := strings.Fields(debugfsR(t, img, rp, "bmap /usr/bin/dash 0"))
			blk := out[len(out)-1] // after debugfs's version banner
			debugfsW(t, img, rp, "freeb "+blk)
			if exec.Command("e2fsck", "-fn", partDev(img, rp)).Run() == nil {
				t.Fatalf("e2fsck -fn accepts the damage (freeb %q): not a useful case", blk)
			}
			return img
		}, "is marked free in the block bitmap"},
		{"truncated download", func(t *testing.T, img string, info *Info) string {
			if err := os.Truncate(img, info.Size*2/3); err != nil {
				t.Fatal(err)
			}
			return img
		}, "this looks like a truncated download: "},
		{"HTML error page", func(t *testing.T, img string, info *Info) string {
			p := filepath.Join(t.TempDir(), "raspios.img.xz")
			os.WriteFile(p, []byte("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n"), 0o644)
			return p
		}, "this is an HTML page of 93 bytes, not a disk image: download it again"},
		{"text file", func(t *testing.T, img string, info *Info) string {
			p := filepath.Join(t.TempDir(), "base.img")
			os.WriteFile(p, []byte(strings.Repeat("version https://git-lfs.github.com/spec/v1 oid sha256:abc size 123\n", 10)), 0o644)
			return p
		}, "this is a text file, not a disk image"},
		{"truncated xz", func(t *testing.T, img string, info *Info) string {
			xzf := fixture.Compress(t, img, "xz")
			data, _ := os.ReadFile(xzf)
			p := filepath.Join(t.TempDir(), "base.img.xz")
			os.WriteFile(p, data[:len(data)/2], 0o644)
			return p
		}, "this looks like a truncated download"},
		{"sha256 given and wrong", func(t *testing.T, img string, info *Info) string { return img },
			"has sha256"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var input string
			lyingBase(t, name, func(img string, info *Info) { input = c.damage(t, img, info) })
			o := PrepareOptions{}
			if c.name == "sha256 given and wrong" {
				o.SHA256 = strings.Repeat("ab", 32)
			}
			base, err := PrepareBase(context.Background(), input, filepath.Join(t.TempDir(), "cache"), o)
			if err == nil {
				_, err = Inspect(base.Path)
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v\nwant one containing %q", err, c.want)
			}
		})
	}
}

// TestUnverifiableZstdWarns: a .zst made with --no-check carries nothing
// that detects a flipped byte: PrepareBase says so, and with the user's
// sha256 a flipped byte is refused.
func TestUnverifiableZstdWarns(t *testing.T) {
	fixture.RequireTools(t, "zstd")
	dir := t.TempDir()
	raw := filepath.Join(dir, "base.img")
	fixture.Run(t, "cp", "--sparse=always", fixture.Cached(t, fixture.RaspiOSBookwormArm64), raw)
	zst := raw + ".zst"
	fixture.Run(t, "zstd", "-q", "-1", "--no-check", raw, "-o", zst)
	var logs testlog.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if _, err := PrepareBase(context.Background(), zst, filepath.Join(dir, "cache"), PrepareOptions{Log: log}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "the base image cannot be verified") {
		t.Fatalf("no warning for an unverifiable .zst; log:\n%s", logs.String())
	}
	sum := sha(mustRead(t, zst))
	data := mustRead(t, zst)
	data[len(data)/2] ^= 0x40
	bad := filepath.Join(dir, "bad.img.zst")
	os.WriteFile(bad, data, 0o644)
	if _, err := PrepareBase(context.Background(), bad, filepath.Join(dir, "cache2"), PrepareOptions{SHA256: sum}); err == nil || !strings.Contains(err.Error(), "the download is corrupt") {
		t.Fatalf("flipped byte with --base-sha256: %v", err)
	}
	// A checked .zst gives no warning.
	logs = testlog.Buffer{}
	fixture.Run(t, "zstd", "-q", "-1", "-f", raw, "-o", zst)
	if _, err := PrepareBase(context.Background(), zst, filepath.Join(dir, "cache3"), PrepareOptions{Log: log}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "cannot be verified") {
		t.Fatalf("warning for a checked .zst:\n%s", logs.String())
	}
}
