package image

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/imgbake/imgbake/internal/tempfile"
)

// A base image is gigabytes: reading all of it for its sha256 on every
// build would cost more than the build. PrepareBase remembers, in the
// cache, the sha256 of each input file it hashed with the file's identity,
// and trusts it again only while the identity is the same. Any write to the
// file, a chmod, a touch, a copy or a download over it changes its ctime
// (which no program can set back), so a changed file is always hashed
// again.

// fileIdentity is what says a file is still the one that was hashed.
type fileIdentity struct {
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	CtimeNs int64  `json:"ctime_ns"`
}

// inputRecord is the cache file that remembers an input's sha256.
type inputRecord struct {
	Path string `json:"path"` // for people reading the cache; not checked
	fileIdentity
	SHA256 string `json:"sha256"`
}

// racyWindow: a file changed less than this long before it was hashed is
// not remembered. Timestamps are only as fine as the file system keeps
// them (a clock tick; a second or two on some), so a change right after
// the hash could leave the same times; the next run hashes such a file
// again.
var racyWindow = 2 * time.Second

var hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// inputRecordPath is where the sha256 of the file with identity id is
// remembered.
func inputRecordPath(cacheDir string, id fileIdentity) string {
	return filepath.Join(cacheDir, fmt.Sprintf("input-%d-%d.json", id.Dev, id.Ino))
}

// rememberedSHA256 returns the sha256 remembered for a file of identity
// id, or "" when none is, or the file is not the same as when it was
// hashed.
func rememberedSHA256(cacheDir string, id fileIdentity) string {
	data, err := os.ReadFile(inputRecordPath(cacheDir, id))
	if err != nil {
		return ""
	}
	var r inputRecord
	if err := json.Unmarshal(data, &r); err != nil || r.fileIdentity != id || !hexSHA256.MatchString(r.SHA256) {
		return ""
	}
	return r.SHA256
}

// rememberSHA256 records sum as the sha256 of f, whose identity was id
// when hashing started at start: only when f is unchanged since (the same
// identity now) and was last changed racyWindow or more before start.
func rememberSHA256(cacheDir string, f *os.File, id fileIdentity, start time.Time, sum string, log *slog.Logger) {
	fi, err := f.Stat()
	if err != nil {
		return
	}
	now, ok := identityOf(fi)
	if !ok || now != id {
		log.Warn("the base image changed while it was being read; build again once it is complete", "input", f.Name())
		return
	}
	if start.Sub(time.Unix(0, max(id.MtimeNs, id.CtimeNs))) < racyWindow {
		log.Debug("not remembering the base's sha256: it changed just before it was hashed", "input", f.Name())
		return
	}
	abs, _ := filepath.Abs(f.Name())
	data, err := json.MarshalIndent(inputRecord{Path: abs, fileIdentity: id, SHA256: sum}, "", "  ")
	if err != nil {
		return
	}
	if err := tempfile.WriteFile(inputRecordPath(cacheDir, id), append(data, '\n'), 0o644); err != nil {
		log.Warn("cannot remember the base's sha256 in the cache; it is hashed again next time", "error", err)
	}
}
