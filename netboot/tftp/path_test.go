package tftp

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestParsePath(t *testing.T) {
	tests := []struct {
		raw  string
		want Request
	}{
		{"bootcode.bin", Request{Kind: NoPrefix, File: "bootcode.bin"}},
		{"1234abcd/start4.elf", Request{Kind: SerialPrefix, Prefix: "1234abcd", File: "start4.elf"}},
		{"1234ABCD/start4.elf", Request{Kind: SerialPrefix, Prefix: "1234abcd", File: "start4.elf"}},
		{"dc-a6-32-01-36-c2/start4.elf", Request{Kind: MACPrefix, Prefix: "dc-a6-32-01-36-c2", File: "start4.elf"}},
		{"DC-A6-32-01-36-C2/cmdline.txt", Request{Kind: MACPrefix, Prefix: "dc-a6-32-01-36-c2", File: "cmdline.txt"}},
		{"1234abcd/overlays/disable-bt.dtbo", Request{Kind: SerialPrefix, Prefix: "1234abcd", File: "overlays/disable-bt.dtbo"}},
		{"abcdef01/kernel_2712.img", Request{Kind: SerialPrefix, Prefix: "abcdef01", File: "kernel_2712.img"}},
		{"fixed/start4.elf", Request{Kind: NoPrefix, File: "fixed/start4.elf"}},
		{"1234abcd", Request{Kind: NoPrefix, File: "1234abcd"}},
	}
	for _, tt := range tests {
		got, err := ParsePath(tt.raw)
		if err != nil {
			t.Errorf("ParsePath(%q): %v", tt.raw, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(Request{}, "Raw", "Client")); diff != "" {
			t.Errorf("ParsePath(%q) (-want +got):\n%s", tt.raw, diff)
		}
	}
}

func TestParsePathRefuses(t *testing.T) {
	for _, raw := range []string{
		"", "/etc/passwd", "../x", "1234abcd/../abcd1234/start4.elf", "1234abcd/./start4.elf",
		"1234abcd//start4.elf", "1234abcd/", "..", ".", `1234abcd\..\x`, "a\x00b", "a\nb",
		"\xff\xfe", strings.Repeat("a", 300), "1234abcd/..",
	} {
		if r, err := ParsePath(raw); !errors.Is(err, ErrBadPath) {
			t.Errorf("ParsePath(%q) = %+v, %v; want ErrBadPath", raw, r, err)
		}
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"bootcode.bin", "1234abcd/start4.elf", "dc-a6-32-01-36-c2/x/y", "../a", "a/../../b", `a\b`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		r, err := ParsePath(raw)
		if err != nil {
			return
		}
		full := r.File
		if r.Prefix != "" {
			full = r.Prefix + "/" + r.File
		}
		if !strings.EqualFold(full, raw) {
			t.Fatalf("ParsePath(%q) rebuilt as %q", raw, full)
		}
		for _, e := range strings.Split(r.File, "/") {
			if e == "" || e == "." || e == ".." || strings.ContainsAny(e, "\\\x00") {
				t.Fatalf("ParsePath(%q) kept element %q", raw, e)
			}
		}
	})
}
