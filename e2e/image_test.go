package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// partition is one MBR partition of a disk image, in bytes.
type partition struct {
	Start, Size int64
	Type        byte
}

// readMBR returns the disk signature and the primary partitions of an image.
func readMBR(path string) (uint32, []partition, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	var s [512]byte
	if _, err := io.ReadFull(f, s[:]); err != nil {
		return 0, nil, fmt.Errorf("reading the MBR of %s: %w", path, err)
	}
	if s[510] != 0x55 || s[511] != 0xaa {
		return 0, nil, fmt.Errorf("%s has no MBR signature", path)
	}
	var parts []partition
	for i := 0; i < 4; i++ {
		e := s[446+16*i : 446+16*(i+1)]
		if e[4] == 0 {
			continue
		}
		parts = append(parts, partition{
			Start: int64(binary.LittleEndian.Uint32(e[8:])) * 512,
			Size:  int64(binary.LittleEndian.Uint32(e[12:])) * 512,
			Type:  e[4],
		})
	}
	return binary.LittleEndian.Uint32(s[440:]), parts, nil
}

// bootFile reads a file from the image's FAT boot partition (p1) with mtools.
func bootFile(ctx context.Context, img string, p partition, name string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "mcopy", "-n", "-i", fmt.Sprintf("%s@@%d", img, p.Start), "::"+name, "-")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("reading %s from the boot partition of %s: %w: %s", name, img, err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// bootSpec is what the Raspberry Pi firmware would load: kernel, initramfs
// and command line.
type bootSpec struct {
	Kernel, Initramfs string
	Cmdline           string
}

// parseConfigTxt resolves config.txt as the firmware of a Raspberry Pi 4
// does: the [all] and [pi4] sections count, kernel= names the kernel (default
// kernel8.img when arm_64bit=1, else kernel7l.img), "initramfs NAME
// followkernel" names the initramfs, and auto_initramfs=1 derives it from the
// kernel name (kernel8.img -> initramfs8). See
// https://www.raspberrypi.com/documentation/computers/config_txt.html.
func parseConfigTxt(data []byte) (bootSpec, error) {
	var spec bootSpec
	arm64, auto, cmdline := false, false, "cmdline.txt"
	active := true
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		switch {
		case line == "":
		case strings.HasPrefix(line, "["):
			sec := strings.Trim(line, "[]")
			active = sec == "all" || sec == "pi4"
		case !active:
		case strings.HasPrefix(line, "initramfs "):
			f := strings.Fields(line)
			spec.Initramfs = f[1]
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "kernel":
				spec.Kernel = strings.TrimSpace(v)
			case "arm_64bit":
				arm64 = strings.TrimSpace(v) == "1"
			case "auto_initramfs":
				auto = strings.TrimSpace(v) == "1"
			case "cmdline":
				cmdline = strings.TrimSpace(v)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return spec, err
	}
	if spec.Kernel == "" {
		spec.Kernel = "kernel7l.img"
		if arm64 {
			spec.Kernel = "kernel8.img"
		}
	}
	if spec.Initramfs == "" && auto {
		spec.Initramfs = strings.TrimSuffix(strings.Replace(spec.Kernel, "kernel", "initramfs", 1), ".img")
	}
	if spec.Initramfs == "" {
		return spec, errors.New("config.txt names no initramfs (neither initramfs nor auto_initramfs=1)")
	}
	spec.Cmdline = cmdline
	return spec, nil
}

// extractBoot copies kernel and initramfs out of the image into dir and
// returns the paths and the command line, as the firmware would use them.
func extractBoot(ctx context.Context, img, dir string) (bootSpec, error) {
	_, parts, err := readMBR(img)
	if err != nil {
		return bootSpec{}, err
	}
	if len(parts) < 2 {
		return bootSpec{}, fmt.Errorf("%s has %d partitions, want boot and root", img, len(parts))
	}
	cfg, err := bootFile(ctx, img, parts[0], "config.txt")
	if err != nil {
		return bootSpec{}, err
	}
	spec, err := parseConfigTxt(cfg)
	if err != nil {
		return bootSpec{}, fmt.Errorf("parsing config.txt of %s: %w", img, err)
	}
	cl, err := bootFile(ctx, img, parts[0], spec.Cmdline)
	if err != nil {
		return bootSpec{}, err
	}
	// The firmware uses the first line of cmdline.txt.
	line, _, _ := strings.Cut(string(cl), "\n")
	spec.Cmdline = strings.TrimSpace(line)
	for _, name := range []*string{&spec.Kernel, &spec.Initramfs} {
		b, err := bootFile(ctx, img, parts[0], *name)
		if err != nil {
			return bootSpec{}, err
		}
		p := filepath.Join(dir, *name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return bootSpec{}, err
		}
		*name = p
	}
	return spec, nil
}

// copySparse copies n bytes at off of src into a new file dst, leaving
// all-zero blocks as holes (images are mostly empty).
func copySparse(dst, src string, off, n int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for done := int64(0); done < n; {
		m := int64(len(buf))
		if n-done < m {
			m = n - done
		}
		if _, err := in.ReadAt(buf[:m], off+done); err != nil {
			out.Close()
			return fmt.Errorf("reading %s: %w", src, err)
		}
		if !bytes.Equal(buf[:m], zero[:m]) {
			if _, err := out.WriteAt(buf[:m], done); err != nil {
				out.Close()
				return err
			}
		}
		done += m
	}
	if err := out.Truncate(n); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// rootPartition copies the image's root partition (p2) to dir/root.ext4.
func rootPartition(img, dir string) (string, error) {
	_, parts, err := readMBR(img)
	if err != nil {
		return "", err
	}
	if len(parts) < 2 {
		return "", fmt.Errorf("%s has no root partition", img)
	}
	root := filepath.Join(dir, "root.ext4")
	if err := copySparse(root, img, parts[1].Start, parts[1].Size); err != nil {
		return "", err
	}
	return root, nil
}

// rootNeedsRecovery tells whether the root file system's journal holds
// transactions the kernel must replay at the next mount (the needs_recovery
// feature: set while mounted, cleared by a clean unmount).
func rootNeedsRecovery(ctx context.Context, img, dir string) (bool, error) {
	root, err := rootPartition(img, dir)
	if err != nil {
		return false, err
	}
	defer os.Remove(root)
	out, err := exec.CommandContext(ctx, "dumpe2fs", "-h", root).CombinedOutput()
	if err != nil {
		return false, fmt.Errorf("dumpe2fs -h: %w\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Filesystem features:") {
			return hasWord(strings.TrimPrefix(l, "Filesystem features:"), "needs_recovery"), nil
		}
	}
	return false, fmt.Errorf("dumpe2fs -h printed no features:\n%s", out)
}

// fsckRoot runs `e2fsck -fn` on a copy of the image's root partition (p2) and
// returns its output; err is set when e2fsck reports anything but a clean
// file system.
func fsckRoot(ctx context.Context, img, dir string) (string, error) {
	root, err := rootPartition(img, dir)
	if err != nil {
		return "", err
	}
	defer os.Remove(root)
	out, err := exec.CommandContext(ctx, "e2fsck", "-fn", root).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("e2fsck -fn: %w", err)
	}
	return string(out), nil
}
