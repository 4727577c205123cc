package tempfile_test

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
	"github.com/imgbake/imgbake/internal/tempfile"
)

// TestRemoveStale removes the temporary files of a process that has ended
// and keeps those of running processes and every other file.
func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Skip("no true command:", err)
	}
	f, err := tempfile.Create(filepath.Join(dir, "k3s-arm64"), ".part")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	own := filepath.Base(f.Name())
	if !strings.HasPrefix(own, ".k3s-arm64"+tempfile.Marker+strconv.Itoa(os.Getpid())+"-") || !strings.HasSuffix(own, ".part.tmp") {
		t.Errorf("temporary file name %s", own)
	}
	stale := ".k5.img" + tempfile.Marker + strconv.Itoa(dead.Process.Pid) + "-123.tmp"
	live := ".k5.img" + tempfile.Marker + strconv.Itoa(os.Getppid()) + "-123.tmp"
	keep := []string{own, live, "k5.img", ".k5.img" + tempfile.Marker + "x-1.tmp", "k5.img" + tempfile.Marker + "1-1.tmp"}
	for _, n := range append(keep, stale) {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tempfile.RemoveStale(dir, nil)
	if _, err := os.Stat(filepath.Join(dir, stale)); err == nil {
		t.Errorf("%s of an ended process was kept", stale)
	}
	for _, n := range keep {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s was removed", n)
		}
	}
}

// files lists the names in dir.
func files(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestWriteFile: the file holds data with the caller's mode whatever the
// umask, replaces an older file, and nothing else is left in the
// directory.
func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "imgbake.secrets.yaml")
	for _, c := range []struct {
		data string
		mode os.FileMode
	}{{"token: one\n", 0o600}, {"token: two\n", 0o644}, {"", 0o640}, {"token: three\n", 0o600}} {
		if err := tempfile.WriteFile(p, []byte(c.data), c.mode); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != c.data {
			t.Errorf("%s holds %q (%v), want %q", p, got, err, c.data)
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode() != c.mode {
			t.Errorf("%s has mode %v (%v), want %v", p, fi.Mode(), err, c.mode)
		}
		if names := files(t, dir); len(names) != 1 {
			t.Errorf("%s holds %q, want the file alone", dir, names)
		}
	}
}

// TestWriteNew writes a file that does not exist and refuses, wrapping
// fs.ErrExist, to replace one that does, leaving it as it was.
func TestWriteNew(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "cluster.yaml")
	if err := tempfile.WriteNew(p, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := tempfile.WriteNew(p, []byte("new\n"), 0o644)
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("WriteNew over an existing file: %v, want an error wrapping fs.ErrExist", err)
	}
	if got, _ := os.ReadFile(p); string(got) != "old\n" {
		t.Errorf("%s holds %q, want the old content", p, got)
	}
	if names := files(t, dir); len(names) != 1 {
		t.Errorf("%s holds %q, want the file alone", dir, names)
	}
}

// TestWriteFileFails: when the rename or the temporary file fails, no
// temporary file is left and what was there stays.
func TestWriteFileFails(t *testing.T) {
	dir := t.TempDir()
	// A directory in the way: the rename fails after the temporary file
	// is written.
	p := filepath.Join(dir, "status.json")
	if err := os.MkdirAll(filepath.Join(p, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := tempfile.WriteFile(p, []byte("{}\n"), 0o644); err == nil || !strings.Contains(err.Error(), "writing "+p+": ") {
		t.Errorf("WriteFile onto a directory: %v, want a writing %s error", err, p)
	}
	if names := files(t, dir); len(names) != 1 || names[0] != "status.json" {
		t.Errorf("%s holds %q after a failed rename, want status.json alone", dir, names)
	}
	if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
		t.Errorf("the directory in the way went: %v", err)
	}

	// A read-only directory (root may write there regardless).
	if os.Geteuid() == 0 {
		t.Log("as root a read-only directory cannot be tested")
		return
	}
	ro := t.TempDir()
	if err := os.WriteFile(filepath.Join(ro, "pending.json"), []byte("[]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(ro, 0o755)
	if err := tempfile.WriteFile(filepath.Join(ro, "pending.json"), []byte("[1]\n"), 0o644); err == nil {
		t.Error("WriteFile in a read-only directory succeeded")
	}
	if names := files(t, ro); len(names) != 1 {
		t.Errorf("%s holds %q, want pending.json alone", ro, names)
	}
}

// TestWriteFileRemovesStale: a temporary file a killed writer left in the
// directory goes when the file is next written; a running one's stays.
func TestWriteFileRemovesStale(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "enrolled.yaml")
	stale, live := fixture.LeftTemps(t, p, []byte("half"))
	if err := tempfile.WriteFile(p, []byte("nodes: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("the temporary file of an ended process was kept")
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the temporary file of a running process went: %v", err)
	}
}
