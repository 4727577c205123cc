package cli

import (
	"fmt"
	"strconv"
	"time"
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
