package k3s

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLocalNotELFMessage: a file that is not an ELF at all (a script, the
// release's .tar.gz by mistake) is named plainly, without debug/elf's
// "bad magic number '[35 33 47 98]'" detail, with what to give instead.
func TestLocalNotELFMessage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k3s")
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho k3s\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Local(p, "arm64")
	if err == nil {
		t.Fatal("a shell script was accepted")
	}
	if msg := err.Error(); strings.Contains(msg, "magic") || !strings.Contains(msg, p+" is not an ELF executable") || !strings.Contains(msg, "k3s-arm64") {
		t.Errorf("message: %q", msg)
	}
}
