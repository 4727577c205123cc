package image

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/imgbake/imgbake/image/ext4"
	"github.com/imgbake/imgbake/image/fat"
	"github.com/imgbake/imgbake/image/manifest"
	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/progress"
)

// applier writes a plan into the image's filesystems.
type applier struct {
	root *ext4.FS
	boot *fat.FS // nil without a FAT partition
	o    *BuildOptions
}

// planBytes estimates the root space the plan needs, in bytes.
func planBytes(p *plan.Plan) (int64, error) {
	var n int64
	const blk = 4096
	for _, e := range p.Entries {
		if e.Part != plan.Root {
			continue
		}
		size := int64(len(e.Data))
		if e.Source != "" {
			fi, err := os.Stat(e.Source)
			if err != nil {
				return 0, fmt.Errorf("reading %s for %s: %w", e.Source, e.Path, err)
			}
			size = fi.Size()
		}
		// Data rounded to blocks, plus a block for extent tree or directory growth.
		n += (size+blk-1)/blk*blk + blk
	}
	return n, nil
}

// apply writes the entries, runs the edits and removes, and returns the
// manifest records.
func (a *applier) apply(p *plan.Plan) ([]manifest.File, []manifest.Edit, error) {
	var files []manifest.File
	for _, e := range p.Entries {
		rec, err := a.entry(e)
		if err != nil {
			return nil, nil, fmt.Errorf("writing %s:%s: %w", e.Part, e.Path, err)
		}
		files = append(files, rec)
	}
	var edits []manifest.Edit
	for _, e := range p.Edits {
		if err := a.edit(e); err != nil {
			return nil, nil, fmt.Errorf("editing %s:%s (%s): %w", e.Part, e.Path, e.Desc, err)
		}
		edits = append(edits, manifest.Edit{Part: e.Part.String(), Path: e.Path, Desc: e.Desc})
	}
	for _, r := range p.Removes {
		if err := a.remove(r); err != nil {
			return nil, nil, fmt.Errorf("removing %s: %w", r, err)
		}
	}
	return files, edits, nil
}

func (a *applier) entry(e plan.Entry) (manifest.File, error) {
	rec := manifest.File{Part: e.Part.String(), Path: e.Path, Kind: e.Kind.String(), UID: e.UID, GID: e.GID,
		Target: e.Target, Secret: e.Secret}
	if e.Part == plan.Root {
		rec.Mode = fmt.Sprintf("%04o", e.Mode)
	}
	if !path.IsAbs(e.Path) || path.Clean(e.Path) != e.Path || e.Path == "/" {
		return rec, fmt.Errorf("path must be absolute and clean")
	}
	if e.Part == plan.Boot {
		if a.boot == nil {
			return rec, errors.New("the image has no FAT boot partition")
		}
		if e.Secret {
			return rec, errors.New("secret files never go on the FAT boot partition")
		}
		switch e.Kind {
		case plan.Dir:
			return rec, a.boot.MkdirAll(e.Path)
		case plan.File:
			data, err := entryData(e)
			if err != nil {
				return rec, err
			}
			rec.Size, rec.SHA256 = int64(len(data)), sum(data)
			return rec, a.boot.WriteFile(e.Path, data)
		}
		return rec, errors.New("FAT has no symlinks")
	}
	attr := ext4.Attr{Mode: e.Mode, UID: e.UID, GID: e.GID}
	if err := a.root.MkdirAll(path.Dir(e.Path), ext4.Attr{Mode: 0o755}); err != nil {
		return rec, fmt.Errorf("creating parent directories: %w", err)
	}
	switch e.Kind {
	case plan.Dir:
		// A directory imgbake owns is a real directory: a symlink the base
		// has there is replaced, never followed, so that a chmod or chown
		// cannot reach whatever it points to (/etc/rancher -> /tmp).
		if fi, err := a.root.Lstat(e.Path); err == nil && fi.IsSymlink() {
			target, _ := a.root.Readlink(e.Path)
			a.o.Log.Warn("the base has a symlink where imgbake writes a directory: replacing it with a directory",
				"path", e.Path, "target", target)
			if err := a.root.Remove(e.Path); err != nil {
				return rec, fmt.Errorf("replacing the symlink at %s: %w", e.Path, err)
			}
		}
		if err := a.root.MkdirAll(e.Path, attr); err != nil {
			return rec, err
		}
		if err := a.root.Chmod(e.Path, e.Mode); err != nil {
			return rec, err
		}
		return rec, a.root.Chown(e.Path, e.UID, e.GID)
	case plan.Symlink:
		if fi, err := a.root.Lstat(e.Path); err == nil && !fi.IsDir() {
			if err := a.root.Remove(e.Path); err != nil {
				return rec, err
			}
		}
		return rec, a.root.Symlink(e.Target, e.Path, attr)
	}
	// A symlink at the path is replaced, not written through.
	if fi, err := a.root.Lstat(e.Path); err == nil && fi.IsSymlink() {
		if err := a.root.Remove(e.Path); err != nil {
			return rec, err
		}
	}
	if e.Source != "" {
		return a.sourceFile(e, attr, rec)
	}
	rec.Size = int64(len(e.Data))
	if !e.Secret {
		rec.SHA256 = sum(e.Data)
	}
	return rec, a.root.WriteFile(e.Path, e.Data, attr)
}

// sourceFile streams a local file into the root filesystem.
func (a *applier) sourceFile(e plan.Entry, attr ext4.Attr, rec manifest.File) (manifest.File, error) {
	f, err := os.Open(e.Source)
	if err != nil {
		return rec, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return rec, err
	}
	bar := progress.New(a.o.Progress, "writing "+e.Path, fi.Size())
	defer bar.Done()
	h := sha256.New()
	r := io.TeeReader(progress.NewReader(io.NewSectionReader(f, 0, fi.Size()), bar), h)
	if err := a.root.CreateFile(e.Path, r, fi.Size(), attr); err != nil {
		return rec, err
	}
	rec.Size = fi.Size()
	if !e.Secret {
		rec.SHA256 = hex.EncodeToString(h.Sum(nil))
	}
	return rec, nil
}

func entryData(e plan.Entry) ([]byte, error) {
	if e.Source != "" {
		return os.ReadFile(e.Source)
	}
	return e.Data, nil
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func (a *applier) edit(e plan.Edit) error {
	if e.Func == nil {
		return errors.New("edit has no function")
	}
	if e.Part == plan.Boot {
		if a.boot == nil {
			return errors.New("the image has no FAT boot partition")
		}
		old, err := a.boot.ReadFile(e.Path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		data, err := e.Func(old)
		if err != nil {
			return err
		}
		return a.boot.WriteFile(e.Path, data)
	}
	attr := ext4.Attr{Mode: e.Mode, UID: e.UID, GID: e.GID}
	old, err := a.root.ReadFile(e.Path)
	switch {
	case err == nil:
		fi, err := a.root.Stat(e.Path)
		if err != nil {
			return err
		}
		attr = ext4.Attr{Mode: uint16(fi.Mode & 0o7777), UID: fi.UID, GID: fi.GID}
	case errors.Is(err, fs.ErrNotExist):
		old = nil
		if err := a.root.MkdirAll(path.Dir(e.Path), ext4.Attr{Mode: 0o755}); err != nil {
			return err
		}
	default:
		return err
	}
	data, err := e.Func(old)
	if err != nil {
		return err
	}
	return a.root.WriteFile(e.Path, data, attr)
}

func (a *applier) remove(r string) error {
	if p, ok := strings.CutPrefix(r, "boot:"); ok {
		if a.boot == nil {
			return nil
		}
		return a.boot.Remove(p)
	}
	err := a.root.Remove(r)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
