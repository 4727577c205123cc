//go:build !linux && !darwin

package flash

import (
	"errors"
	"os"
)

func openDevice(path string) (*os.File, bool, error) {
	return nil, false, errors.New("writing to disk devices is supported on Linux and macOS only; pass a file path with --allow-file")
}

func deviceSize(f *os.File) (int64, error) { return f.Seek(0, 2) }

func rereadPartitions(*os.File) {}

func dropCache(*os.File, bool) {}
