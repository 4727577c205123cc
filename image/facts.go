package image

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/imgbake/imgbake/image/ext4"
)

// Account is a user of an image's /etc/passwd.
type Account struct{ UID, GID int }

// Accounts reads the users of the root filesystem of the image at path,
// which Inspect described as info.
func Accounts(path string, info *Info) (map[string]Account, error) {
	var users map[string]Account
	err := withRoot(path, info, func(fsys *ext4.FS) error {
		data, err := fsys.ReadFile("/etc/passwd")
		if err != nil {
			return fmt.Errorf("reading /etc/passwd: %w", err)
		}
		users = parsePasswd(string(data))
		return nil
	})
	return users, err
}

func parsePasswd(s string) map[string]Account {
	users := map[string]Account{}
	for _, line := range strings.Split(s, "\n") {
		f := strings.Split(line, ":")
		if len(f) < 4 {
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 == nil && err2 == nil {
			users[f[0]] = Account{uid, gid}
		}
	}
	return users
}

// NewestFileTime is the newest modification time in the root filesystem of
// the image at path, to the second, in UTC: a time stamp for the files a build
// writes that depends only on the base image (so builds are reproducible) and
// is not older than the base's own files. When the root filesystem cannot be
// read it is 1970-01-01 (Unix time 0), which is reproducible too.
func NewestFileTime(path string, info *Info) time.Time {
	var newest time.Time
	withRoot(path, info, func(fsys *ext4.FS) error {
		return fsys.Walk("/", func(_ string, fi *ext4.FileInfo, err error) error {
			if err == nil && fi.Mtime.After(newest) {
				newest = fi.Mtime
			}
			return nil
		})
	})
	if newest.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return newest.Truncate(time.Second).UTC()
}

// withRoot opens the root filesystem of the image at path read-only for fn.
func withRoot(path string, info *Info, fn func(*ext4.FS) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	p, ok := info.Partition(info.RootPartition)
	if !ok {
		return fmt.Errorf("no root partition")
	}
	fsys, err := ext4.Open(f, p.Start, p.Size, &ext4.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer fsys.Close()
	return fn(fsys)
}
