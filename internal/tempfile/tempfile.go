// Package tempfile names the temporary files imgbake writes beside a final
// file (outputs, cache entries, downloads) so that the ones a killed
// imgbake left behind are recognised and removed by the next run: they can
// be gigabytes and hold a join token.
package tempfile

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Marker is in the name of every temporary file imgbake writes.
const Marker = ".imgbake-"

// Pattern is the os.CreateTemp pattern for a temporary file named after
// final, in final's directory: ".k5.img.imgbake-<pid>-<random><suffix>.tmp",
// which says which process wrote it.
func Pattern(final, suffix string) string {
	return "." + filepath.Base(final) + Marker + strconv.Itoa(os.Getpid()) + "-*" + suffix + ".tmp"
}

// Create creates a temporary file for final in final's directory.
func Create(final, suffix string) (*os.File, error) {
	return os.CreateTemp(filepath.Dir(final), Pattern(final, suffix))
}

// RemoveStale removes the temporary files in dir left by imgbake processes
// that no longer run; log (nil: none) says which.
func RemoveStale(dir string, log *slog.Logger) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		i := strings.Index(name, Marker)
		if !strings.HasPrefix(name, ".") || i < 0 || !strings.HasSuffix(name, ".tmp") {
			continue
		}
		pidText, _, _ := strings.Cut(name[i+len(Marker):], "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err == nil && log != nil {
			log.Info("removed a temporary file of an interrupted imgbake", "file", filepath.Join(dir, name))
		}
	}
}

// processAlive reports whether a process with that id exists.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// WriteFile replaces path with data, durably and at once: data goes to a
// temporary file in path's directory (named as Create names it) that is
// given mode, fsynced and renamed over path, and then the directory is
// fsynced. path holds its old content or the new, also after a crash; on
// any error the temporary file is removed. Temporary files a killed
// imgbake left in the directory are removed first.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	return write(path, data, mode, true)
}

// WriteNew is WriteFile for a path that must not exist: it never replaces
// a file, also not one made meanwhile, and its error then wraps
// fs.ErrExist.
func WriteNew(path string, data []byte, mode os.FileMode) error {
	return write(path, data, mode, false)
}

func write(path string, data []byte, mode os.FileMode, replace bool) error {
	dir := filepath.Dir(path)
	RemoveStale(dir, nil)
	tmp, err := Create(path, "")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	// After a rename a no-op; after a link or an error the temporary
	// name goes.
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if replace {
		err = os.Rename(tmp.Name(), path)
	} else {
		// Link fails if path exists; a rename would replace it.
		err = os.Link(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("writing %s: syncing its directory: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("writing %s: syncing its directory: %w", path, err)
	}
	return nil
}
