// Package tempfile names the temporary files imgbake writes beside a final
// file (outputs, cache entries, downloads) so that the ones a killed
// imgbake left behind are recognised and removed by the next run: they can
// be gigabytes and hold a join token.
package tempfile

import (
	"errors"
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
