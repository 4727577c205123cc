package manifest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/imgbake/imgbake/image/plan"
)

func TestMarshalLoadRoundTrip(t *testing.T) {
	m := &Manifest{
		FormatVersion: FormatVersion,
		Epoch:         time.Unix(1700000000, 0).UTC(),
		Base:          Base{SHA256: "ab", Format: "xz", Size: 10, OS: plan.OS{Family: "raspios", Release: "bookworm", Arch: "arm64"}},
		Meta:          map[string]string{"node": "k5", "k3s_version": "v1.31.4+k3s1"},
		Files: []File{
			{Part: "root", Path: "/etc/hostname", Kind: "file", Mode: "0644", Size: 3, SHA256: "cd"},
			{Part: "root", Path: "/etc/rancher/k3s/token", Kind: "file", Mode: "0600", Size: 40, Secret: true},
		},
		Edits:  []Edit{{Part: "boot", Path: "/cmdline.txt", Desc: "add cgroup flags"}},
		Image:  Image{Name: "k5.img", Size: 4096, SHA256: "ef", Bmap: "k5.img.bmap"},
		Ranges: []Range{{Offset: 0, Length: 4096, SHA256: "ef"}},
	}
	a, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := m.Marshal()
	if string(a) != string(b) {
		t.Error("Marshal is not deterministic")
	}
	if !strings.Contains(string(a), `"k3s_version": "v1.31.4+k3s1",`+"\n"+`    "node": "k5"`) {
		t.Errorf("meta keys not sorted:\n%s", a)
	}
	p := filepath.Join(t.TempDir(), "k5.img.manifest.json")
	if err := os.WriteFile(p, a, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(m, got); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
}

func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct{ data, want string }{
		"future.json": {`{"format_version": 2}`, "format version 2, this imgbake reads 1"},
		"bad.json":    {`{"format_version": `, "reading manifest bad.json"},
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(c.data), 0o644)
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", name, err, c.want)
		}
	}
	if _, err := Load(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("missing file loaded")
	}
}
