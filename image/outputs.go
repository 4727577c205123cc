package image

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"github.com/imgbake/imgbake/internal/tempfile"
)

// Output files are replaced as a set. The build writes every file under a
// temporary name that says which process wrote it (".k5.img.imgbake-<pid>-
// <random>.tmp"), fsyncs them, then renames them over the old files with
// the manifest last: the manifest is the commit record, naming the sha256
// of the .bmap and the checksums of the image's ranges, so a set that a
// crash left half-switched is recognised (manifest.CheckSet) before
// anything is flashed. A rename that fails puts the old files back.
// Each output directory is locked while a build writes into it; the next
// build removes temporary files whose process is gone.

// tempMarker is in the name of every temporary file imgbake writes.
const tempMarker = tempfile.Marker

// tempPattern is the os.CreateTemp pattern for a temporary file named
// after final.
var tempPattern = tempfile.Pattern

// dirLocks holds this process's locks on output and cache directories,
// shared by the builds it runs at once.
var dirLocks = struct {
	sync.Mutex
	held map[string]*dirLock
}{held: map[string]*dirLock{}}

type dirLock struct {
	f    *os.File
	refs int
}

// lockDir takes the imgbake lock of dir (dir/.imgbake.lock), so that no
// other imgbake process writes there at the same time, and removes the
// temporary files of dead builds. Builds in one process share the lock.
// When another process holds it, lockDir waits for it if wait (a cache),
// else refuses (an output directory).
func lockDir(dir string, log *slog.Logger, wait bool) (unlock func(), err error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	dirLocks.Lock()
	defer dirLocks.Unlock()
	l := dirLocks.held[abs]
	if l == nil {
		f, err := os.OpenFile(filepath.Join(abs, ".imgbake.lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, fmt.Errorf("locking %s: %w", dir, err)
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if errors.Is(err, syscall.EWOULDBLOCK) && wait {
			log.Info("waiting for another imgbake using the directory", "dir", dir)
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		}
		if err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("another imgbake is writing into %s (it holds %s): wait for it to finish, or use another directory",
					dir, filepath.Join(dir, ".imgbake.lock"))
			}
			return nil, fmt.Errorf("locking %s: %w", dir, err)
		}
		l = &dirLock{f: f}
		dirLocks.held[abs] = l
		tempfile.RemoveStale(abs, log)
	}
	l.refs++
	return func() {
		dirLocks.Lock()
		defer dirLocks.Unlock()
		if l.refs--; l.refs == 0 {
			delete(dirLocks.held, abs)
			l.f.Close() // releases the flock
		}
	}, nil
}

// phaseKey is the context key of a test's phase hook.
type phaseKey struct{}

// phase calls the hook a test put in ctx (withPhaseHook) as Build enters
// each phase: copy, apply, bmap, compress, commit and each rename. It is
// how tests interrupt or kill a build at a chosen point.
func phase(ctx context.Context, name string) {
	if hook, ok := ctx.Value(phaseKey{}).(func(string)); ok {
		hook(name)
	}
}

// output is one file of the set: its temporary name, final name and mode.
type output struct {
	tmp, final string
	mode       os.FileMode
}

// commitOutputs replaces the final files by the temporary ones, in order
// (the manifest last), durably: the files and the directory are synced
// before, the directory again after. It does nothing once ctx is done. When a rename fails, the files
// already replaced get their previous content back (kept as hard links
// until the switch is complete) and new ones are removed.
func commitOutputs(ctx context.Context, outs []output) (err error) {
	for _, o := range outs {
		if err := os.Chmod(o.tmp, o.mode); err != nil {
			return err
		}
		if err := syncPath(o.tmp); err != nil {
			return fmt.Errorf("writing %s: %w", filepath.Base(o.final), err)
		}
	}
	if len(outs) > 0 {
		if err := syncPath(filepath.Dir(outs[0].final)); err != nil {
			return fmt.Errorf("syncing the output directory: %w", err)
		}
	}
	phase(ctx, "commit")
	if err := ctx.Err(); err != nil {
		return err
	}
	type undo struct{ final, backup string }
	var done []undo
	defer func() {
		if err != nil {
			for i := len(done) - 1; i >= 0; i-- {
				if done[i].backup != "" {
					os.Rename(done[i].backup, done[i].final)
				} else {
					os.Remove(done[i].final)
				}
			}
		}
		for _, u := range done {
			if u.backup != "" {
				os.Remove(u.backup)
			}
		}
		if len(outs) > 0 {
			syncPath(filepath.Dir(outs[0].final))
		}
	}()
	for _, o := range outs {
		phase(ctx, "rename "+filepath.Base(o.final))
		if err := ctx.Err(); err != nil {
			return err // the files already switched get their old content back
		}
		u := undo{final: o.final}
		if st, err := os.Lstat(o.final); err == nil && st.Mode().IsRegular() {
			u.backup = filepath.Join(filepath.Dir(o.final), "."+filepath.Base(o.final)+tempMarker+strconv.Itoa(os.Getpid())+"-old.tmp")
			os.Remove(u.backup)
			if err := os.Link(o.final, u.backup); err != nil {
				return fmt.Errorf("keeping the previous %s: %w", filepath.Base(o.final), err)
			}
		}
		if err := os.Rename(o.tmp, o.final); err != nil {
			if u.backup != "" {
				os.Remove(u.backup)
			}
			return fmt.Errorf("storing %s: %w (the previous files are kept)", filepath.Base(o.final), err)
		}
		done = append(done, u)
	}
	return nil
}

// syncPath fsyncs a file or directory.
func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
