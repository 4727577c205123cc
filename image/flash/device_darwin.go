package flash

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// diskutil runs `diskutil args... -plist`-style commands and parses the
// property list they print.
func diskutil(ctx context.Context, args ...string) (map[string]any, error) {
	cmd := exec.CommandContext(ctx, "diskutil", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("running diskutil %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return readPlistDict(bytes.NewReader(out))
}

func systemDisks(ctx context.Context) []string {
	root, err := diskutil(ctx, "info", "-plist", "/")
	if err != nil {
		return nil
	}
	return darwinSystemDisks(root)
}

// Devices returns the external physical disks of this Mac.
func Devices(ctx context.Context) ([]Device, error) {
	list, err := diskutil(ctx, "list", "-plist", "external", "physical")
	if err != nil {
		return nil, fmt.Errorf("listing disks: %w", err)
	}
	sys := systemDisks(ctx)
	var out []Device
	for _, id := range darwinWholeDisks(list) {
		d, err := lookupDarwin(ctx, id, sys)
		if err != nil {
			return nil, err
		}
		out = append(out, *d)
	}
	return out, nil
}

// LookupDevice returns the whole disk at path (/dev/disk4 or /dev/rdisk4).
func LookupDevice(ctx context.Context, path string) (*Device, error) {
	if !strings.HasPrefix(path, "/dev/disk") && !strings.HasPrefix(path, "/dev/rdisk") {
		return nil, fmt.Errorf("%s is not a disk: give /dev/diskN or /dev/rdiskN (see imgbake flash --list)", path)
	}
	id := strings.TrimPrefix(strings.TrimPrefix(path, "/dev/"), "r")
	return lookupDarwin(ctx, id, systemDisks(ctx))
}

func lookupDarwin(ctx context.Context, id string, sys []string) (*Device, error) {
	info, err := diskutil(ctx, "info", "-plist", id)
	if err != nil {
		return nil, fmt.Errorf("looking up /dev/%s: %w", id, err)
	}
	list, err := diskutil(ctx, "list", "-plist", darwinWholeDisk(id))
	if err != nil {
		return nil, fmt.Errorf("looking up /dev/%s: %w", id, err)
	}
	return darwinDevice(info, list, sys)
}
