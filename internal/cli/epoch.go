package cli

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/imgbake/imgbake/image"
	"github.com/imgbake/imgbake/image/ext4"
)

// sourceDateEpoch reads SOURCE_DATE_EPOCH (seconds since 1970); the zero
// time when it is unset.
func (a *App) sourceDateEpoch() (time.Time, error) {
	s := a.getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: expected seconds since 1970-01-01 (e.g. $(git log -1 --format=%%ct))", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

// defaultEpoch is the time stamp of files imgbake writes when
// SOURCE_DATE_EPOCH is not set: the newest modification time in the base
// image's root filesystem. It depends only on the base image, so builds are
// reproducible, and the new files are not older than the base's own. If the
// root filesystem cannot be read it is 1970-01-01 (Unix time 0), which is
// reproducible too.
func defaultEpoch(base *image.Base, info *image.Info) time.Time {
	var newest time.Time
	f, err := os.Open(base.Path)
	if err != nil {
		return time.Unix(0, 0).UTC()
	}
	defer f.Close()
	if p, ok := info.Partition(info.RootPartition); ok {
		if fsys, err := ext4.Open(f, p.Start, p.Size, &ext4.Options{ReadOnly: true}); err == nil {
			fsys.Walk("/", func(_ string, fi *ext4.FileInfo, err error) error {
				if err == nil && fi.Mtime.After(newest) {
					newest = fi.Mtime
				}
				return nil
			})
			fsys.Close()
		}
	}
	if newest.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return newest.Truncate(time.Second).UTC()
}
