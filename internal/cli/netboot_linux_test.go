package cli

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgbake/imgbake/internal/fixture"
	"github.com/imgbake/imgbake/internal/testlog"
)

// TestNetbootServes runs `imgbake netboot` (without DHCP) in a network
// namespace of its own and fetches a node's boot files with atftp from
// another namespace, over a veth link whose end has the node's MAC: a
// node's files go only to an address the neighbour table maps to its MAC.
func TestNetbootServes(t *testing.T) {
	fixture.RequireTools(t)
	if _, err := exec.LookPath("atftp"); err != nil {
		t.Skip("atftp not installed (apt-get install atftp)")
	}
	srv, cli := fixture.NewNetns(t, "cli-s"), fixture.NewNetns(t, "cli-c")
	srv.Veth(t, "vs", "", cli, "vc")
	cli.IP(t, "link", "set", "vc", "address", "dc:a6:32:01:36:c2") // k5's MAC in the cluster file
	srv.IP(t, "addr", "add", "10.78.0.1/24", "dev", "vs")
	cli.IP(t, "addr", "add", "10.78.0.2/24", "dev", "vc")
	srv.IP(t, "link", "set", "vs", "up")
	cli.IP(t, "link", "set", "vc", "up")

	dir, cfg := netbootCluster(t)
	// The init programs, built here: the test must not depend on `go
	// generate` having run.
	initDir := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(initDir, "init-arm64"), "../../netboot/initrd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building netboot/initrd: %v\n%s", err, out)
	}
	initProg, _ := os.ReadFile(filepath.Join(initDir, "init-arm64"))
	// The command runs in a process inside the server namespace (TFTP
	// opens a socket per transfer: they must all be in that namespace).
	var stderr testlog.Buffer
	cmd := srv.Command(os.Args[0], "-test.run=^TestNetbootHelper$")
	cmd.Env = append(os.Environ(), "IMGBAKE_NETBOOT_INIT_DIR="+initDir,
		netbootHelperEnv+"="+strings.Join([]string{"netboot", "--config", cfg, "--interface", "vs", "--no-dhcp", "--disk-size", "1G"}, "\n"))
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() { cmd.Wait(); done <- cmd.ProcessState.ExitCode() }()
	get := func(name, out string) error {
		return cli.Command("atftp", "-g", "-r", name, "-l", out, "10.78.0.1", "69").Run()
	}
	out := filepath.Join(t.TempDir(), "cmdline.txt")
	var got []byte
	code := -1
loop:
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		select {
		case code = <-done:
			break loop
		default:
		}
		if get("1234abcd/cmdline.txt", out) == nil {
			got, _ = os.ReadFile(out)
			break
		}
	}
	// The initramfs (config.txt has auto_initramfs=1; the fixture has no
	// initramfs8 of its own) is the addition with our init.
	initrd := filepath.Join(t.TempDir(), "initramfs8")
	if code == -1 {
		if err := get("1234abcd/initramfs8", initrd); err != nil {
			t.Errorf("fetching initramfs8: %v", err)
		} else if b, _ := os.ReadFile(initrd); !bytes.HasPrefix(b, []byte("070701")) || !bytes.Contains(b, initProg) {
			t.Errorf("initramfs8 (%d bytes) does not hold the init program", len(b))
		}
	}
	if code == -1 {
		cmd.Process.Signal(syscall.SIGTERM)
		code = <-done
	}
	if code != 0 {
		t.Errorf("netboot exit %d:\n%s", code, stderr.String())
	}
	want := "root=/dev/nbd0p2 imgbake.nbd=10.78.0.1:10809/k5 ip=dhcp rootwait\n"
	if !strings.HasSuffix(string(got), want) {
		t.Errorf("cmdline.txt = %q, want it to end with %q\nlog:\n%s", got, want, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "netboot-state", "k5", "disk.img")); err != nil {
		t.Errorf("no disk made: %v", err)
	}
	if !strings.Contains(stderr.String(), "netboot: serving") {
		t.Errorf("log lacks the start line:\n%s", stderr.String())
	}
}

// netbootHelperEnv holds the arguments (one a line) of the imgbake
// command TestNetbootHelper runs.
const netbootHelperEnv = "IMGBAKE_CLI_NETBOOT_HELPER"

// TestNetbootHelper is the server process of TestNetbootServes; it does
// nothing in a normal test run.
func TestNetbootHelper(t *testing.T) {
	args := os.Getenv(netbootHelperEnv)
	if args == "" {
		t.Skip("the server process of TestNetbootServes")
	}
	app := &App{Stdout: os.Stdout, Stderr: os.Stderr, Env: os.Getenv}
	if code := app.Execute(context.Background(), strings.Split(args, "\n")); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// TestWaitInterfaceAddr: started at boot, netboot waits for its interface
// to get its address instead of failing (and being restarted by systemd);
// an interface that does not exist is an error at once.
func TestWaitInterfaceAddr(t *testing.T) {
	ns, peer := fixture.NewNetns(t, "addr"), fixture.NewNetns(t, "addr-p")
	ns.Veth(t, "lan0", "", peer, "peer0")
	log := slog.New(slog.DiscardHandler)
	err := ns.Do(func() error {
		if _, err := waitInterfaceAddr(context.Background(), "nope0", "", 0, log); err == nil || !strings.Contains(err.Error(), "nope0") {
			t.Errorf("missing interface, no --wait: %v", err)
		}
		go func() {
			time.Sleep(1500 * time.Millisecond)
			peer.IP(t, "link", "add", "late0", "type", "veth", "peer", "name", "late1")
			peer.IP(t, "link", "set", "late0", "netns", string(ns))
			ns.IP(t, "addr", "add", "10.9.1.5/24", "dev", "late0")
		}()
		if addr, err := waitInterfaceAddr(context.Background(), "late0", "", time.Minute, log); err != nil || addr.String() != "10.9.1.5" {
			t.Errorf("an interface that appears later: %v, %v", addr, err)
		}
		go func() {
			time.Sleep(1500 * time.Millisecond)
			ns.IP(t, "addr", "add", "10.9.0.5/24", "dev", "lan0")
		}()
		start := time.Now()
		addr, err := waitInterfaceAddr(context.Background(), "lan0", "", time.Minute, log)
		if err != nil || addr.String() != "10.9.0.5" || time.Since(start) < time.Second {
			t.Errorf("waited %s for %v, %v", time.Since(start), addr, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
		defer cancel()
		if _, err := waitInterfaceAddr(ctx, "lan0", "10.9.0.6", time.Minute, log); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("an address that never comes, stopped: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
