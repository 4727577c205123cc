package ext4

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// memDev is an in-memory Device.
type memDev struct{ b []byte }

func (m *memDev) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memDev) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, io.ErrShortWrite
	}
	return copy(m.b[off:], p), nil
}

// FuzzCoreOpen feeds corrupted images to the reader and writer: errors are fine, panics
// and hangs are not.
func FuzzCoreOpen(f *testing.F) {
	if _, err := exec.LookPath("mkfs.ext4"); err == nil {
		for _, opts := range [][]string{{"-b", "1024"}, {"-b", "1024", "-O", "^metadata_csum,^64bit"}} {
			dir := f.TempDir()
			root := filepath.Join(dir, "root")
			os.MkdirAll(filepath.Join(root, "etc"), 0o755)
			os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("pi\n"), 0o644)
			os.Symlink("/etc/hostname", filepath.Join(root, "link"))
			img := filepath.Join(dir, "fs.img")
			args := append([]string{"-q", "-F", "-N", "32", "-O", "^has_journal,^resize_inode"}, opts...)
			args = append(args, "-d", root, img, "192K")
			if out, err := exec.Command("mkfs.ext4", args...).CombinedOutput(); err != nil {
				f.Fatalf("mkfs: %v %s", err, out)
			}
			b, _ := os.ReadFile(img)
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			fuzzBody(data)
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("hang")
		}
	})
}

func fuzzBody(data []byte) {
	{
		fs, err := Open(bytes.NewReader(data), 0, int64(len(data)), &Options{ReadOnly: true, Now: coreNow})
		if err == nil {
			_ = fs.Walk("/", func(p string, fi *FileInfo, err error) error {
				if err == nil && fi.IsRegular() {
					fs.ReadFile(p)
				}
				if err == nil {
					fs.ListXattrs(p)
				}
				return nil
			})
			fs.Readlink("/link")
			fs.AllocatedRanges()
		}
		dev := &memDev{b: append([]byte(nil), data...)}
		w, err := Open(dev, 0, int64(len(data)), &Options{Now: coreNow})
		if err != nil {
			return
		}
		w.WriteFile("/etc/hostname", []byte("node\n"), Attr{Mode: 0644})
		w.MkdirAll("/a/b", Attr{Mode: 0755})
		w.Symlink("/a/b", "/a/c", Attr{})
		w.SetXattr("/etc/hostname", "user.x", []byte("y"))
		w.Remove("/link")
		w.Close()
	}
}
