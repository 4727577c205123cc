package e2e

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// standinPrefix starts each record the stand-in k3s prints on the console.
const standinPrefix = "IMGBAKE-STANDIN "

// qemuArch is how QEMU emulates a Raspberry Pi of one architecture: the
// "virt" board, a CPU that runs the Debian kernel of that architecture
// (armmp-lpae needs LPAE: Cortex-A15), software emulation (TCG).
type qemuArch struct {
	Binary string
	Args   []string
}

func qemuFor(arch string) qemuArch {
	if arch == "armhf" {
		return qemuArch{"qemu-system-arm", []string{"-M", "virt", "-cpu", "cortex-a15"}}
	}
	return qemuArch{"qemu-system-aarch64", []string{"-M", "virt", "-cpu", "cortex-a72"}}
}

// vm is one running QEMU whose serial console is scanned for the stand-in's
// records.
type vm struct {
	t       *testing.T
	name    string
	cmd     *exec.Cmd
	monitor string
	logPath string
	exited  chan struct{}
	waitErr error

	mu      sync.Mutex
	records map[string]string
	waiters []chan struct{}
	tail    []string
}

// startVM boots disk (a raw image that the VM may change) with the kernel,
// initramfs and command line of spec. The VM is killed when ctx ends or the
// test finishes.
func startVM(ctx context.Context, t *testing.T, name, arch, disk string, spec bootSpec) *vm {
	t.Helper()
	return startVMOn(ctx, t, name, arch, disk, spec, vmNet{})
}

// vmNet plugs a VM into a network namespace's tap device; the zero value
// means no network card.
type vmNet struct {
	ns, tap, mac string
	// memMiB is the VM's memory (default 1024).
	memMiB int
}

// startVMOn is startVM with a network card (and memory) as n says.
func startVMOn(ctx context.Context, t *testing.T, name, arch, disk string, spec bootSpec, n vmNet) *vm {
	t.Helper()
	q := qemuFor(arch)
	v := newVM(t, name)
	nic := []string{"-nic", "none"}
	if n.tap != "" {
		nic = []string{"-netdev", "tap,id=n0,ifname=" + n.tap + ",script=no,downscript=no", "-device", "virtio-net-device,netdev=n0,mac=" + n.mac}
	}
	// cmdline.txt says console=serial0,115200: on a Pi the firmware
	// replaces serial0 with the UART's device. Nothing does that on QEMU's
	// virt board, whose UART is ttyAMA0, so that console is appended; the
	// rest of the command line is the image's own.
	args := append(append([]string{}, q.Args...),
		"-m", strconv.Itoa(cmp.Or(n.memMiB, 1024)), "-smp", "1",
		"-display", "none", "-no-reboot",
		"-serial", "stdio",
		"-monitor", "unix:"+v.monitor+",server=on,wait=off",
		"-kernel", spec.Kernel, "-initrd", spec.Initramfs,
		"-append", spec.Cmdline+" console=ttyAMA0",
		"-drive", "if=none,id=hd,format=raw,file="+disk,
		"-device", "virtio-blk-device,drive=hd",
	)
	args = append(args, nic...)
	v.cmd = exec.Command(q.Binary, args...)
	if n.ns != "" {
		v.cmd = exec.Command("ip", append([]string{"netns", "exec", n.ns, q.Binary}, args...)...)
	}
	v.run(ctx, t, fmt.Sprintf("booting %s", disk))
	return v
}

// newVM makes a vm with a QEMU monitor socket and a serial log path.
func newVM(t *testing.T, name string) *vm {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "imgbake-qmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	return &vm{
		t: t, name: name,
		monitor: filepath.Join(sockDir, "mon"),
		logPath: serialLogPath(t, name),
		exited:  make(chan struct{}),
		records: map[string]string{},
	}
}

// run starts v.cmd with its console copied to the serial log and scanned.
// The VM is killed when ctx ends or the test finishes; a failed test logs
// the last console lines.
func (v *vm) run(ctx context.Context, t *testing.T, what string) {
	t.Helper()
	stdout, err := v.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	v.cmd.Stderr = v.cmd.Stdout
	logf, err := os.Create(v.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", v.cmd.Path, err)
	}
	t.Logf("%s: %s (serial log %s)", v.name, what, v.logPath)
	go func() {
		v.scan(io.TeeReader(stdout, logf))
		v.waitErr = v.cmd.Wait()
		logf.Close()
		close(v.exited)
	}()
	go func() {
		select {
		case <-ctx.Done():
			v.kill()
		case <-v.exited:
		}
	}()
	t.Cleanup(func() {
		v.kill()
		<-v.exited
		if t.Failed() {
			t.Logf("%s: last console lines:\n%s", v.name, v.lastLines())
		}
	})
}

// serialLogPath is where a VM's console is written: in $IMGBAKE_E2E_LOGS
// when set (kept, e.g. as CI artifacts), else in the test's temp directory.
func serialLogPath(t *testing.T, name string) string {
	dir := os.Getenv("IMGBAKE_E2E_LOGS")
	if dir == "" {
		return filepath.Join(t.TempDir(), name+".serial.log")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	test := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	return filepath.Join(dir, test+"-"+name+".serial.log")
}

func (v *vm) scan(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		v.mu.Lock()
		v.tail = append(v.tail, line)
		if len(v.tail) > 80 {
			v.tail = v.tail[len(v.tail)-80:]
		}
		if i := strings.Index(line, standinPrefix); i >= 0 {
			k, q, ok := strings.Cut(line[i+len(standinPrefix):], "=")
			if val, err := strconv.Unquote(q); ok && err == nil {
				v.records[k] = val
				for _, w := range v.waiters {
					close(w)
				}
				v.waiters = nil
			}
		}
		v.mu.Unlock()
	}
}

func (v *vm) lastLines() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return strings.Join(v.tail, "\n")
}

// record returns the stand-in's record key, waiting for it until ctx ends or
// QEMU exits.
func (v *vm) record(ctx context.Context, key string) (string, error) {
	for {
		v.mu.Lock()
		val, ok := v.records[key]
		ch := make(chan struct{})
		if !ok {
			v.waiters = append(v.waiters, ch)
		}
		v.mu.Unlock()
		if ok {
			return val, nil
		}
		select {
		case <-ch:
		case <-v.exited:
			return "", fmt.Errorf("%s: QEMU exited (%v) before the stand-in k3s reported %s", v.name, v.waitErr, key)
		case <-ctx.Done():
			return "", fmt.Errorf("%s: no %s from the stand-in k3s: %w", v.name, key, ctx.Err())
		}
	}
}

// ready waits, bootTimeout at most, for the stand-in k3s in v to report
// ready and returns its records; a boot that does not get there fails t,
// with the stand-in's error when it reported one.
func (v *vm) ready(ctx context.Context, t *testing.T) map[string]string {
	t.Helper()
	bctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	if _, err := v.record(bctx, "ready"); err != nil {
		if msg, ok := v.snapshot()["error"]; ok {
			t.Fatalf("%v; the stand-in k3s failed: %s", err, msg)
		}
		t.Fatal(err)
	}
	return v.snapshot()
}

// records returns a copy of everything the stand-in reported so far.
func (v *vm) snapshot() map[string]string {
	v.mu.Lock()
	defer v.mu.Unlock()
	m := make(map[string]string, len(v.records))
	for k, val := range v.records {
		m[k] = val
	}
	return m
}

// kill ends QEMU at once (SIGKILL): the guest gets no chance to flush.
func (v *vm) kill() {
	if v.cmd.Process != nil {
		_ = v.cmd.Process.Signal(syscall.SIGKILL)
	}
}

// waitExit waits until QEMU has exited.
func (v *vm) waitExit(ctx context.Context) error {
	select {
	case <-v.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: QEMU still running: %w", v.name, ctx.Err())
	}
}

// powerOff presses the virt board's power button (gpio-keys; systemd-logind
// answers with a clean poweroff) and waits until QEMU exits. The button is
// pressed again every 30 s in case logind was not watching it yet.
func (v *vm) powerOff(ctx context.Context) error {
	for {
		if err := v.monitorCommand("system_powerdown"); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := v.waitExit(wctx)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return errors.Join(errors.New("the guest did not power off after system_powerdown"), err)
		}
		v.t.Logf("%s: still running 30 s after the power button; pressing it again", v.name)
	}
	var ee *exec.ExitError
	if v.waitErr != nil && !errors.As(v.waitErr, &ee) {
		return v.waitErr
	}
	return nil
}

func (v *vm) monitorCommand(cmd string) error {
	c, err := net.Dial("unix", v.monitor)
	if err != nil {
		return fmt.Errorf("%s: connecting to the QEMU monitor: %w", v.name, err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return fmt.Errorf("%s: sending %s: %w", v.name, cmd, err)
	}
	// Let the monitor read the command before the connection closes.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _ = c.Read(make([]byte, 4096))
	return nil
}

// elapsedSince formats a duration for logs.
func elapsedSince(t0 time.Time) string {
	return time.Since(t0).Round(100 * time.Millisecond).String()
}
