package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestBumpMarker(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k3s", markerName)
	for want := 0; want < 3; want++ {
		prev, err := bumpMarker(path)
		if err != nil {
			t.Fatal(err)
		}
		if prev != want {
			t.Fatalf("bumpMarker = %d, want %d", prev, want)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != "3" {
		t.Errorf("marker = %q, want 3", got)
	}
	if _, err := os.Stat(path + ".tmp"); err == nil {
		t.Error("temp file left behind")
	}
}

func TestBumpMarkerRefusesGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), markerName)
	if err := os.WriteFile(path, []byte("not a number\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := bumpMarker(path); err == nil {
		t.Fatal("bumpMarker accepted a marker that is not a number")
	}
}

func TestNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	if err := notify("READY=1"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := l.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != "READY=1" {
		t.Errorf("datagram = %q, want READY=1", got)
	}
}

func TestEmitIsOneParseableLine(t *testing.T) {
	var b bytes.Buffer
	value := "node-label:\n  - a=b\ntoken: \"x y\""
	emit(&b, "config", value)
	line := b.String()
	if strings.Count(line, "\n") != 1 || !strings.HasPrefix(line, "IMGBAKE-STANDIN config=") {
		t.Fatalf("emit wrote %q", line)
	}
	got, err := strconv.Unquote(strings.TrimSpace(strings.TrimPrefix(line, "IMGBAKE-STANDIN config=")))
	if err != nil || got != value {
		t.Errorf("value read back = %q, %v; want %q", got, err, value)
	}
}
