package ext4_test

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imgbake/imgbake/image/ext4"
)

// Speed and memory for imgbake's heaviest write: a k3s airgap tarball (70
// MiB here) and a handful of small files into a large, mostly empty root
// filesystem.

// genReader streams n pseudo-random bytes determined by seed without
// holding them.
type genReader struct {
	rng *rand.PCG
	n   int64
}

func newGenReader(seed string, n int64) *genReader {
	h := sha256.Sum256([]byte(seed))
	return &genReader{rng: rand.NewPCG(uint64(h[0])<<8|uint64(h[1]), uint64(n)), n: n}
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.n == 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), g.n)]
	for i := 0; i < len(p); i += 8 {
		v := g.rng.Uint64()
		for j := 0; j < 8 && i+j < len(p); j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	g.n -= int64(len(p))
	return len(p), nil
}

// mkfsSparse makes an empty pi-gen-style filesystem of size bytes in a
// sparse file at img.
func mkfsSparse(t testing.TB, img string, size int64) {
	t.Helper()
	requireTool(t, "mkfs.ext4")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-F", "-q", "-O", "^64bit,^huge_file", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
}

const benchBig = 70 << 20

// BenchmarkWrite70MiB writes one 70 MiB file and 20 small ones into an
// empty 2 GiB filesystem with the package and with debugfs -w -f, from the
// same local files, and reports how many times slower we are (ours/debugfs).
func BenchmarkWrite70MiB(b *testing.B) {
	requireTool(b, "debugfs")
	dir := b.TempDir()
	empty := filepath.Join(dir, "empty.img")
	mkfsSparse(b, empty, 2<<30)
	local := filepath.Join(dir, "files")
	if err := os.Mkdir(local, 0o755); err != nil {
		b.Fatal(err)
	}
	writeLocal := func(name string, r io.Reader) {
		fh, err := os.Create(filepath.Join(local, name))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(fh, r); err != nil {
			b.Fatal(err)
		}
		fh.Close()
	}
	writeLocal("big", newGenReader("big", benchBig))
	cmds := []string{"mkdir /var", "mkdir /var/lib", "mkdir /var/lib/images", "write " + filepath.Join(local, "big") + " /var/lib/images/big"}
	for i := range 20 {
		name := fmt.Sprintf("small%02d", i)
		writeLocal(name, newGenReader(name, int64(100+i*500)))
		cmds = append(cmds, "write "+filepath.Join(local, name)+" /var/lib/"+name)
	}
	script := filepath.Join(dir, "cmds")
	if err := os.WriteFile(script, []byte(strings.Join(cmds, "\n")+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	img := filepath.Join(dir, "work.img")
	var perOp [2]time.Duration
	for i, name := range []string{"ours", "debugfs"} {
		b.Run(name, func(b *testing.B) {
			for n := 0; n < b.N; n++ {
				b.StopTimer()
				if err := copySparse(empty, img); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if name == "ours" {
					benchOurs(b, img, local)
				} else if out, err := exec.Command("debugfs", "-w", "-f", script, img).CombinedOutput(); err != nil {
					b.Fatalf("debugfs: %v\n%s", err, out)
				}
				b.StopTimer()
				if n == 0 {
					e2fsckClean(b, img)
					want, _ := os.ReadFile(filepath.Join(local, "big"))
					if got := debugfsCat(b, img, "/var/lib/images/big"); sha256.Sum256(got) != sha256.Sum256(want) {
						b.Fatalf("%s: the 70 MiB file reads back wrong", name)
					}
				}
				b.StartTimer()
			}
			perOp[i] = b.Elapsed() / time.Duration(b.N)
		})
	}
	b.Run("ratio", func(b *testing.B) {
		b.ReportMetric(float64(perOp[0])/float64(perOp[1]), "ours/debugfs")
		b.ReportMetric(float64(benchBig)/perOp[0].Seconds()/(1<<20), "ours-MiB/s")
	})
}

// benchOurs does the writes of BenchmarkWrite70MiB with the package.
func benchOurs(b *testing.B, img, local string) {
	f := openImage(b, img, false)
	a := ext4.Attr{Mode: 0o644}
	if err := f.MkdirAll("/var/lib/images", ext4.Attr{Mode: 0o755}); err != nil {
		b.Fatal(err)
	}
	big, err := os.Open(filepath.Join(local, "big"))
	if err != nil {
		b.Fatal(err)
	}
	defer big.Close()
	if err := f.CreateFile("/var/lib/images/big", big, benchBig, a); err != nil {
		b.Fatal(err)
	}
	for i := range 20 {
		name := fmt.Sprintf("small%02d", i)
		data, err := os.ReadFile(filepath.Join(local, name))
		if err != nil {
			b.Fatal(err)
		}
		if err := f.WriteFile("/var/lib/"+name, data, a); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// TestMemory70MiBInto64GiB streams 70 MiB into a sparse 64 GiB filesystem
// in a child process and requires its peak RSS (VmHWM) below 150 MB:
// memory must not grow with the file or the filesystem.
func TestMemory70MiBInto64GiB(t *testing.T) {
	if img := os.Getenv("IMGBAKE_EXT4_MEMCHILD"); img != "" {
		memChild(t, img)
		return
	}
	if testing.Short() {
		t.Skip("-short: skipping the 64 GiB memory test")
	}
	img := filepath.Join(t.TempDir(), "64g.img")
	mkfsSparse(t, img, 64<<30)
	cmd := exec.Command(os.Args[0], "-test.run=^TestMemory70MiBInto64GiB$", "-test.v")
	cmd.Env = append(os.Environ(), "IMGBAKE_EXT4_MEMCHILD="+img)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var hwm int64 = -1
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "VmHWM-kB: "); ok {
			hwm, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if hwm < 0 {
		t.Fatalf("child did not report VmHWM:\n%s", out)
	}
	t.Logf("peak RSS writing 70 MiB into 64 GiB: %d MB", hwm*1024/1e6)
	if hwm*1024 >= 150e6 {
		t.Errorf("peak RSS %d MB, want < 150 MB", hwm*1024/1e6)
	}
	e2fsckClean(t, img)
	want := sha256.New()
	io.Copy(want, newGenReader("airgap", benchBig))
	if got := sha256.Sum256(debugfsCat(t, img, "/var/lib/rancher/k3s/agent/images/airgap.tar")); string(got[:]) != string(want.Sum(nil)) {
		t.Errorf("the 70 MiB file reads back wrong")
	}
}

// memChild is the child side: write, close, report VmHWM.
func memChild(t *testing.T, img string) {
	f := openImage(t, img, false)
	if err := f.MkdirAll("/var/lib/rancher/k3s/agent/images", ext4.Attr{Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	if err := f.CreateFile("/var/lib/rancher/k3s/agent/images/airgap.tar", newGenReader("airgap", benchBig), benchBig, ext4.Attr{Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			fmt.Printf("VmHWM-kB: %s\n", strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		}
	}
}
