package flash

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// HistoryFile is the name of the flash log kept in an output directory:
// one JSON record per line, one line per card written.
const HistoryFile = "flash.log"

// Record is one card written by flash.
type Record struct {
	Time time.Time `json:"time"`
	// Node and Image name what was written; Build identifies the image's
	// build (the sha256 of its manifest), so a rebuilt node counts as not
	// flashed again.
	Node  string `json:"node"`
	Image string `json:"image"`
	Build string `json:"build,omitempty"`
	// Target is the device or file, Device its description (model, size).
	Target string `json:"target"`
	Device string `json:"device,omitempty"`
	// OK is true when the card was written and verified (or written, with
	// verification skipped: then Verified is false).
	OK       bool   `json:"ok"`
	Verified bool   `json:"verified"`
	Error    string `json:"error,omitempty"`
}

// AppendHistory adds records to the flash log in dir. Each record is one
// write of one line, so concurrent imgbake runs do not mix lines.
func AppendHistory(dir string, recs ...Record) error {
	f, err := os.OpenFile(filepath.Join(dir, HistoryFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("writing flash log: %w", err)
	}
	for _, r := range recs {
		line, err := json.Marshal(r)
		if err == nil {
			_, err = f.Write(append(line, '\n'))
		}
		if err != nil {
			f.Close()
			return fmt.Errorf("writing flash log: %w", err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing flash log: %w", err)
	}
	return nil
}

// ReadHistory returns the records of the flash log in dir, oldest first;
// none when there is no log. Lines that do not parse are skipped.
func ReadHistory(dir string) ([]Record, error) {
	f, err := os.Open(filepath.Join(dir, HistoryFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading flash log: %w", err)
	}
	defer f.Close()
	var recs []Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Record
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			recs = append(recs, r)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading flash log: %w", err)
	}
	return recs, nil
}

// Flashed reports whether the records hold a successful write of build.
func Flashed(recs []Record, build string) bool {
	for _, r := range recs {
		if r.OK && build != "" && r.Build == build {
			return true
		}
	}
	return false
}
