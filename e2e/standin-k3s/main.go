// Command standin-k3s stands in for k3s in imgbake's QEMU boot tests.
//
// It is installed where imgbake installs k3s (/usr/local/bin/k3s) and started
// by the unit imgbake writes. It records how it was started by printing one
// line per fact to the serial console:
//
//	IMGBAKE-STANDIN <key>=<Go-quoted value>
//
// (keys: boot_id, argv, role, config, config_mode, config_d, hostname,
// cmdline, cgroup_controllers, firstboot_stamp, firstboot_unit, accounts,
// timezone, marker_prev, marker, notify, ready, then multi_user once
// multi-user.target is reached or after 5 minutes), keeps a boot counter in a marker file under
// /var/lib/rancher/k3s that it fsyncs (file and directory) before it reports
// ready (telling systemd READY=1 when the unit is Type=notify), and then
// stays up until SIGTERM, like k3s.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	configPath   = "/etc/rancher/k3s/config.yaml"
	configDir    = "/etc/rancher/k3s/config.yaml.d"
	markerDir    = "/var/lib/rancher/k3s"
	markerName   = "imgbake-standin-boots"
	stampPath    = "/var/lib/imgbake/firstboot.done"
	firstbootSvc = "imgbake-firstboot.service"
)

func main() {
	out := openConsole()
	if err := run(out, os.Args); err != nil {
		emit(out, "error", err.Error())
		fmt.Fprintln(os.Stderr, "standin-k3s:", err)
		os.Exit(1)
	}
}

// openConsole returns the serial console: /dev/console (the last console= of
// the kernel command line), else the kernel log, else stderr (the journal).
func openConsole() io.Writer {
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY|syscall.O_NOCTTY, 0); err == nil {
		return f
	}
	if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		return kmsg{f}
	}
	return os.Stderr
}

// kmsg writes each line as a kernel log record at KERN_CRIT, so that it
// reaches the console even with "quiet".
type kmsg struct{ w io.Writer }

func (k kmsg) Write(p []byte) (int, error) {
	if _, err := k.w.Write(append([]byte("<2>"), p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// emit prints one record as a single write, so that it is not split by other
// console output.
func emit(w io.Writer, key, value string) {
	_, _ = io.WriteString(w, "IMGBAKE-STANDIN "+key+"="+strconv.Quote(value)+"\n")
}

func run(out io.Writer, argv []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	emit(out, "boot_id", readTrim("/proc/sys/kernel/random/boot_id"))
	args, _ := json.Marshal(argv)
	emit(out, "argv", string(args))
	role := "none"
	if len(argv) > 1 {
		role = argv[1]
	}
	emit(out, "role", role)
	reportConfig(out)
	host, err := os.Hostname()
	if err != nil {
		host = "error: " + err.Error()
	}
	emit(out, "hostname", host)
	emit(out, "cmdline", readTrim("/proc/cmdline"))
	emit(out, "cgroup_controllers", readTrim("/sys/fs/cgroup/cgroup.controllers"))
	reportFirstboot(ctx, out)
	reportAccounts(out)
	reportTimezone(out)

	prev, err := bumpMarker(filepath.Join(markerDir, markerName))
	if err != nil {
		return fmt.Errorf("writing the marker file: %w", err)
	}
	emit(out, "marker_prev", strconv.Itoa(prev))
	emit(out, "marker", strconv.Itoa(prev+1))

	// k3s's install.sh makes servers Type=notify and agents Type=exec: only
	// the former get a $NOTIFY_SOCKET.
	if os.Getenv("NOTIFY_SOCKET") == "" {
		emit(out, "notify", "no NOTIFY_SOCKET")
	} else if err := notify("READY=1"); err != nil {
		return fmt.Errorf("notifying systemd: %w", err)
	} else {
		emit(out, "notify", "READY=1 sent")
	}
	emit(out, "ready", role)
	go reportMultiUser(ctx, out)
	<-ctx.Done()
	emit(out, "stopping", role)
	return nil
}

// reportAccounts prints the login accounts (uid 1000 to 59999): name, uid,
// home, shell, groups, the sha256 of the shadow password field and the
// authorized_keys of each, with their mode and owner.
func reportAccounts(out io.Writer) {
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		emit(out, "accounts", "error: "+err.Error())
		return
	}
	shadow := map[string]string{}
	if b, err := os.ReadFile("/etc/shadow"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Split(l, ":"); len(f) > 1 {
				shadow[f[0]] = f[1]
			}
		}
	}
	groups := map[string][]string{}
	if b, err := os.ReadFile("/etc/group"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Split(l, ":"); len(f) > 3 && f[3] != "" {
				for _, u := range strings.Split(f[3], ",") {
					groups[u] = append(groups[u], f[0])
				}
			}
		}
	}
	var lines []string
	for _, l := range strings.Split(string(passwd), "\n") {
		f := strings.Split(l, ":")
		if len(f) < 7 {
			continue
		}
		if uid, err := strconv.Atoi(f[2]); err != nil || uid < 1000 || uid >= 60000 {
			continue
		}
		sum := sha256.Sum256([]byte(shadow[f[0]]))
		keys, owner := "none", ""
		p := filepath.Join(f[5], ".ssh", "authorized_keys")
		if b, err := os.ReadFile(p); err == nil {
			keys = strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "|")
			if fi, err := os.Stat(p); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					owner = fmt.Sprintf("%04o/%d:%d", fi.Mode().Perm(), st.Uid, st.Gid)
				}
			}
		}
		lines = append(lines, fmt.Sprintf("%s uid=%s gid=%s home=%s shell=%s groups=%s shadow_sha256=%x keys_mode=%s keys=%s",
			f[0], f[2], f[3], f[5], f[6], strings.Join(groups[f[0]], ","), sum, owner, keys))
	}
	emit(out, "accounts", strings.Join(lines, "\n"))
}

// reportTimezone prints where /etc/localtime points, /etc/timezone and the
// zone the C library's rules give now.
func reportTimezone(out io.Writer) {
	link, err := os.Readlink("/etc/localtime")
	if err != nil {
		link = "error: " + err.Error()
	}
	zone, _ := time.Now().Zone()
	emit(out, "timezone", link+" "+readTrim("/etc/timezone")+" "+zone)
}

// reportMultiUser waits until multi-user.target is active (the boot did not
// stop at an interactive first-boot wizard) and prints its state, and that
// of the wizard's unit.
func reportMultiUser(ctx context.Context, out io.Writer) {
	state := ""
	for i := 0; i < 300; i++ {
		b, _ := exec.CommandContext(ctx, "systemctl", "is-active", "multi-user.target").Output()
		if state = strings.TrimSpace(string(b)); state == "active" {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	b, _ := exec.CommandContext(ctx, "systemctl", "show", "userconfig.service", "-p", "LoadState,ActiveState,UnitFileState").Output()
	emit(out, "multi_user", state+" userconfig: "+strings.Join(strings.Fields(string(b)), " "))
	// A netboot server node's imgbake-netboot.service, with multi-user.target.
	b, _ = exec.CommandContext(ctx, "systemctl", "show", "imgbake-netboot.service", "-p", "LoadState,ActiveState,SubState,NRestarts").Output()
	emit(out, "netboot_svc", strings.Join(strings.Fields(string(b)), " "))
	if strings.Contains(string(b), "LoadState=loaded") {
		b, _ = exec.CommandContext(ctx, "journalctl", "-b", "-u", "imgbake-netboot.service", "-o", "cat", "--no-pager", "-n", "30").Output()
		emit(out, "netboot_log", string(b))
	}
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSpace(string(b))
}

// reportConfig prints config.yaml, its mode and owner, and the drop-ins of
// config.yaml.d in the order k3s merges them.
func reportConfig(out io.Writer) {
	emit(out, "config", readTrim(configPath))
	if fi, err := os.Stat(configPath); err == nil {
		st, _ := fi.Sys().(*syscall.Stat_t)
		mode := fmt.Sprintf("%04o", fi.Mode().Perm())
		if st != nil {
			mode += fmt.Sprintf(" %d:%d", st.Uid, st.Gid)
		}
		emit(out, "config_mode", mode)
	} else {
		emit(out, "config_mode", "error: "+err.Error())
	}
	var parts []string
	if ents, err := os.ReadDir(configDir); err == nil {
		names := make([]string, 0, len(ents))
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".yaml") {
				names = append(names, e.Name())
			}
		}
		sort.Strings(names)
		for _, n := range names {
			parts = append(parts, "# "+n+"\n"+readTrim(filepath.Join(configDir, n)))
		}
	}
	emit(out, "config_d", strings.Join(parts, "\n"))
}

// reportFirstboot prints whether the first-boot stamp exists and what systemd
// knows of the first-boot unit in this boot (whether its condition passed and
// when its main process started).
func reportFirstboot(ctx context.Context, out io.Writer) {
	if fi, err := os.Stat(stampPath); err == nil {
		emit(out, "firstboot_stamp", "present "+fi.ModTime().UTC().Format(time.RFC3339Nano))
	} else if errors.Is(err, fs.ErrNotExist) {
		emit(out, "firstboot_stamp", "absent")
	} else {
		emit(out, "firstboot_stamp", "error: "+err.Error())
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, "systemctl", "show", firstbootSvc,
		"-p", "LoadState,ActiveState,Result,ConditionResult,ExecMainStartTimestampMonotonic,ExecMainStatus").Output()
	if err != nil {
		emit(out, "firstboot_unit", "error: "+err.Error())
		return
	}
	emit(out, "firstboot_unit", strings.TrimSpace(string(b)))
}

// bumpMarker reads the boot counter in path (0 when absent) and replaces it
// with counter+1 durably: temp file, fsync, rename, fsync of the directory.
func bumpMarker(path string) (int, error) {
	prev := 0
	if b, err := os.ReadFile(path); err == nil {
		prev, err = strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return 0, fmt.Errorf("reading %s: %w", path, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	if _, err := fmt.Fprintf(f, "%d\n", prev+1); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return 0, err
	}
	for _, p := range []string{dir, filepath.Dir(dir)} {
		d, err := os.Open(p)
		if err != nil {
			return 0, err
		}
		err = d.Sync()
		d.Close()
		if err != nil {
			return 0, fmt.Errorf("syncing %s: %w", p, err)
		}
	}
	return prev, nil
}

// notify sends state to systemd's $NOTIFY_SOCKET (sd_notify(3)): one
// datagram on a unix socket, abstract when the name starts with '@'.
func notify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if strings.HasPrefix(name, "@") {
		name = "\x00" + name[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
