// Package version reports which imgbake this is.
package version

import (
	"bytes"
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release version, set at link time by the Makefile
// (-X github.com/imgbake/imgbake/internal/version.Version=v1.2.3). It is a
// var only because the linker can set nothing else; nothing assigns it at run
// time.
var Version = ""

// Commit is the git commit the binary was built from, set at link time by
// the Makefile (-X github.com/imgbake/imgbake/internal/version.Commit=<hash>).
// Without it String falls back to the revision `go build` records when it
// builds inside a git checkout.
var Commit = ""

// String returns the version with the commit and Go version when known:
// "v1.2.3 (abc1234def56, go1.26.8)". A build without -X reports "dev".
func String() string {
	v, rev := Version, Commit
	dirty := false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && rev == "" {
				rev = s.Value
			}
			if s.Key == "vcs.modified" && s.Value == "true" && Commit == "" {
				dirty = true
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	if v == "" {
		v = "dev"
	}
	if rev != "" {
		return fmt.Sprintf("%s (%s, %s)", v, rev, runtime.Version())
	}
	return fmt.Sprintf("%s (%s)", v, runtime.Version())
}

// SameBuild reports whether the program whose bytes are data is this
// imgbake's own build for another platform: a Makefile build stamps the
// version and the 40-digit commit into the binary (-X), and the other
// platform's binary of the same `make cross` carries the same strings.
// known is false for a build without the stamp, which cannot tell.
func SameBuild(data []byte) (same, known bool) {
	if len(Commit) < 40 {
		return false, false
	}
	return bytes.Contains(data, []byte(Commit)) && (Version == "" || bytes.Contains(data, []byte(Version))), true
}
