package tempfile

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestRemoveStale removes the temporary files of a process that has ended
// and keeps those of running processes and every other file.
func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Skip("no true command:", err)
	}
	f, err := Create(filepath.Join(dir, "k3s-arm64"), ".part")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	own := filepath.Base(f.Name())
	if !strings.HasPrefix(own, ".k3s-arm64"+Marker+strconv.Itoa(os.Getpid())+"-") || !strings.HasSuffix(own, ".part.tmp") {
		t.Errorf("temporary file name %s", own)
	}
	stale := ".k5.img" + Marker + strconv.Itoa(dead.Process.Pid) + "-123.tmp"
	live := ".k5.img" + Marker + strconv.Itoa(os.Getppid()) + "-123.tmp"
	keep := []string{own, live, "k5.img", ".k5.img" + Marker + "x-1.tmp", "k5.img" + Marker + "1-1.tmp"}
	for _, n := range append(keep, stale) {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	RemoveStale(dir, nil)
	if _, err := os.Stat(filepath.Join(dir, stale)); err == nil {
		t.Errorf("%s of an ended process was kept", stale)
	}
	for _, n := range keep {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s was removed", n)
		}
	}
}
