// Package version reports which imgbake this is.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release version, set at link time by the Makefile
// (-X github.com/imgbake/imgbake/internal/version.Version=v1.2.3). It is a
// var only because the linker can set nothing else; nothing assigns it at run
// time.
var Version = ""

// String returns the version with the VCS revision and Go version when known:
// "v1.2.3 (abc1234, go1.26.8)". A build without -X reports "dev".
func String() string {
	v := Version
	rev, dirty := "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 7 {
				rev = s.Value[:7]
			}
			if s.Key == "vcs.modified" && s.Value == "true" {
				dirty = true
			}
		}
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
