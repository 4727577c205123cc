package tftp

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgbake/imgbake/internal/fixture"
)

// TestTsizeProbe replays the Pi bootloader's first round: RRQ with tsize=0,
// read the OACK, abort with an ERROR. The server must report the size and
// log the abort quietly, then serve the second request.
func TestTsizeProbe(t *testing.T) {
	want := fixture.RandomBytes(5000, 11)
	ts := startServer(t, testFiles{"1234abcd/start4.elf": want}, 0)
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.WriteTo(rrq("1234abcd/start4.elf", "tsize", "0", "blksize", "1024"), ts.addr)
	buf := make([]byte, 2000)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, from, err := conn.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if op := binary.BigEndian.Uint16(buf); op != 6 {
		t.Fatalf("got opcode %d, want OACK", op)
	}
	opts := string(buf[2:n])
	if !strings.Contains(opts, "tsize\x005000\x00") || !strings.Contains(opts, "blksize\x001024\x00") {
		t.Fatalf("OACK options %q lack tsize 5000 / blksize 1024", opts)
	}
	conn.WriteTo(append([]byte{0, 5, 0, 8}, "tsize probe\x00"...), from)
	// The second request comes from a new TID (port), as RFC 1350 asks:
	// pin/tftp answers the abort with an ERROR of its own on the old one.
	conn2, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	c := &rawClient{conn: conn2, server: ts.addr, timeout: time.Second}
	got, err := c.get("1234abcd/start4.elf", 1024)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("second request: %d bytes, %v", len(got), err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(ts.log.String(), "after option negotiation") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	log := ts.log.String()
	if !strings.Contains(log, `level=DEBUG msg="tftp: client ended the transfer after option negotiation"`) {
		t.Errorf("probe abort not logged at debug:\n%s", log)
	}
	if strings.Contains(log, "level=WARN") {
		t.Errorf("probe produced a warning:\n%s", log)
	}
}

// zeros is a large file that takes no memory.
type zeros struct{}

func (zeros) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}

func TestTooManyBlocksWarns(t *testing.T) {
	size := int64(65535 * 1024) // 65536 blocks at 1024: the empty last one overflows
	r := ResolverFunc(func(context.Context, Request) (File, error) { return File{Data: zeros{}, Size: size}, nil })
	ts := startServer(t, r, 50*time.Millisecond)
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.WriteTo(rrq("1234abcd/kernel8.img", "blksize", "1024"), ts.addr)
	buf := make([]byte, 2000)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, from, err := conn.ReadFrom(buf); err != nil {
		t.Fatal(err)
	} else {
		conn.WriteTo(ack(0), from)
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, _, err := conn.ReadFrom(buf); err != nil {
			t.Fatal(err)
		}
		conn.WriteTo([]byte{0, 5, 0, 0, 0}, from)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(ts.log.String(), "more than 65535 blocks") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if log := ts.log.String(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "blocks=65536") {
		t.Fatalf("no block-count warning:\n%s", log)
	}
}

// TestAtftp fetches with the real atftp client, as the Pi does: blksize
// 1024 and tsize.
func TestAtftp(t *testing.T) {
	atftp, err := exec.LookPath("atftp")
	if err != nil {
		t.Skip("atftp not installed (apt-get install atftp): skipping the real-client interop test")
	}
	files := testFiles{
		"1234abcd/start4.elf": fixture.RandomBytes(2_000_000, 21),
		"bootcode.bin":        fixture.RandomBytes(51_200, 22),
	}
	ts := startServer(t, files, 0)
	dir := t.TempDir()
	for name, want := range files {
		out := filepath.Join(dir, "out")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, atftp, "--option", "blksize 1024", "--option", "tsize 0",
			"-g", "-r", name, "-l", out, "127.0.0.1", strings.TrimPrefix(ts.addr.String(), "127.0.0.1:"))
		b, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("atftp get %s: %v\n%s", name, err, b)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("atftp get %s: %d bytes, want %d (contents differ)", name, len(got), len(want))
		}
	}
	out := filepath.Join(dir, "bad")
	cmd := exec.Command(atftp, "-g", "-r", "../etc/passwd", "-l", out, "127.0.0.1", strings.TrimPrefix(ts.addr.String(), "127.0.0.1:"))
	if b, err := cmd.CombinedOutput(); err == nil && !strings.Contains(string(b), "rror") {
		t.Errorf("atftp fetched ../etc/passwd: %s", b)
	}
}
