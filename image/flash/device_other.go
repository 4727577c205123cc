//go:build !linux && !darwin

package flash

import (
	"context"
	"errors"
)

var errNoDevices = errors.New("finding disks is supported on Linux and macOS only; pass a file path with --allow-file")

// Devices is not supported on this platform.
func Devices(ctx context.Context) ([]Device, error) { return nil, errNoDevices }

// LookupDevice is not supported on this platform.
func LookupDevice(ctx context.Context, path string) (*Device, error) { return nil, errNoDevices }
