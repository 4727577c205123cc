package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// arches are the Debian architectures the boot tests cover.
func arches() []string { return []string{"arm64", "armhf"} }

// goEnv is the Go build environment of the stand-in k3s for a Debian
// architecture (k3s-armhf is ARMv7).
func goEnv(arch string) []string {
	if arch == "armhf" {
		return []string{"GOARCH=arm", "GOARM=7"}
	}
	return []string{"GOARCH=" + arch}
}

// lazy is a value built once, by the first test that needs it.
type lazy struct {
	once sync.Once
	path string
	err  error
}

func (l *lazy) get(build func() (string, error)) (string, error) {
	l.once.Do(func() { l.path, l.err = build() })
	return l.path, l.err
}

// env is what the boot tests share: a work directory, the fixtures built
// once per run, and a limit on how many QEMUs run at once.
type env struct {
	dir     string
	repo    string
	boots   chan struct{}
	standin map[string]*lazy
	base    map[string]*lazy
	withK3s map[string]*lazy
	baked   map[string]*lazy
	imgbake lazy
}

func newEnv(t *testing.T) *env {
	t.Helper()
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	n := runtime.NumCPU()
	e := &env{
		dir:     t.TempDir(),
		repo:    repo,
		boots:   make(chan struct{}, n),
		standin: map[string]*lazy{}, base: map[string]*lazy{}, withK3s: map[string]*lazy{},
		baked: map[string]*lazy{},
	}
	for _, a := range arches() {
		e.standin[a], e.base[a], e.withK3s[a], e.baked[a] = &lazy{}, &lazy{}, &lazy{}, &lazy{}
	}
	return e
}

// requireTools fails the test when a tool the boot tests need is missing:
// they are skipped only when QEMU itself is absent.
func requireTools(t *testing.T) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"qemu-system-arm", "dpkg-deb", "apt-get", "mkfs.ext4", "e2fsck", "dumpe2fs",
		"mkfs.vfat", "mcopy", "sfdisk", "cpio", "depmod", "modprobe", "gzip", "flock", "systemd-sysusers", "systemctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("the boot tests need %s: apt-get install qemu-system-arm dpkg apt e2fsprogs dosfstools mtools fdisk cpio kmod gzip util-linux systemd",
			strings.Join(missing, ", "))
	}
	if os.Geteuid() != 0 {
		const msg = "the boot tests build their base images from Debian packages and need root for the files' owners: run `make e2e` as root"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + " (CI must run them)")
		}
		t.Skip("skipping: " + msg)
	}
}

// slot waits for a free QEMU slot (one per CPU; TCG keeps a CPU busy) and
// returns its release.
func (e *env) slot(ctx context.Context, t *testing.T) func() {
	t.Helper()
	select {
	case e.boots <- struct{}{}:
		return func() { <-e.boots }
	case <-ctx.Done():
		t.Fatalf("waiting for a free QEMU slot: %v", ctx.Err())
		return nil
	}
}

// standinBinary builds e2e/standin-k3s for arch.
func (e *env) standinBinary(ctx context.Context, arch string) (string, error) {
	return e.standin[arch].get(func() (string, error) {
		out := filepath.Join(e.dir, "standin-k3s-"+arch)
		cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./e2e/standin-k3s")
		cmd.Dir = e.repo
		cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux"), goEnv(arch)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building the stand-in k3s for %s: %w\n%s", arch, err, b)
		}
		return out, nil
	})
}

// goTool is the go command that runs the tests: `go test` puts its own
// GOROOT/bin first in PATH.
func goTool() string {
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// mkbase runs e2e/mkbase.sh build (downloading the .debs into the cache on
// the first run) and returns the image and how long it took.
func (e *env) mkbase(ctx context.Context, t *testing.T, arch, name, extra string) (string, error) {
	out := filepath.Join(e.dir, name+".img")
	args := []string{filepath.Join(e.repo, "e2e", "mkbase.sh"), "build", arch, out}
	if extra != "" {
		args = append(args, extra)
	}
	t0 := time.Now()
	cmd := exec.CommandContext(ctx, "bash", args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the %s base image: %w\n%s", arch, err, b)
	}
	t.Logf("built %s in %s", out, elapsedSince(t0))
	return out, nil
}

// baseImage is the plain Raspberry Pi OS-like image of arch, as imgbake gets
// it: no k3s, no unit.
func (e *env) baseImage(ctx context.Context, t *testing.T, arch string) (string, error) {
	return e.base[arch].get(func() (string, error) {
		return e.mkbase(ctx, t, arch, "base-"+arch, "")
	})
}

// handInstalledImage is the base image with the stand-in k3s installed by
// hand (binary, config.yaml 0600, a Type=notify k3s.service): it proves the
// fixture and the stand-in boot, independent of imgbake.
func (e *env) handInstalledImage(ctx context.Context, t *testing.T, arch string) (string, error) {
	return e.withK3s[arch].get(func() (string, error) {
		bin, err := e.standinBinary(ctx, arch)
		if err != nil {
			return "", err
		}
		extra := filepath.Join(e.dir, "extra-"+arch)
		files := []struct {
			path string
			mode os.FileMode
			data string
		}{
			{"etc/rancher/k3s/config.yaml", 0o600, "node-label:\n  - e2e=hand-installed\n"},
			{"etc/systemd/system/k3s.service", 0o644, handUnit},
		}
		for _, f := range files {
			p := filepath.Join(extra, f.path)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return "", err
			}
			if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
				return "", err
			}
		}
		wants := filepath.Join(extra, "etc/systemd/system/multi-user.target.wants")
		if err := os.MkdirAll(wants, 0o755); err != nil {
			return "", err
		}
		if err := os.Symlink("/etc/systemd/system/k3s.service", filepath.Join(wants, "k3s.service")); err != nil {
			return "", err
		}
		k3s := filepath.Join(extra, "usr/local/bin/k3s")
		if err := os.MkdirAll(filepath.Dir(k3s), 0o755); err != nil {
			return "", err
		}
		b, err := os.ReadFile(bin)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(k3s, b, 0o755); err != nil {
			return "", err
		}
		return e.mkbase(ctx, t, arch, "hand-"+arch, extra)
	})
}

// handUnit is a k3s.service like install.sh's, reduced to what the stand-in
// needs.
const handUnit = `[Unit]
Description=Lightweight Kubernetes (stand-in, installed by hand)
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
KillMode=process
Delegate=yes
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStart=/usr/local/bin/k3s server

[Install]
WantedBy=multi-user.target
`

// diskCopy makes a sparse copy of img that a VM may change.
func diskCopy(t *testing.T, img, name string) string {
	t.Helper()
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), name)
	if err := copySparse(dst, img, 0, fi.Size()); err != nil {
		t.Fatalf("copying %s: %v", img, err)
	}
	return dst
}
