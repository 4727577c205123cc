package ext4

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func TestCoreWrite(t *testing.T) {
	for kind, opts := range coreKinds {
		t.Run(kind, func(t *testing.T) {
			img := coreMkfs(t, 64, 600, opts...)
			f, fh := coreOpen(t, img)
			defer fh.Close()
			a := Attr{Mode: 04755, UID: 1000, GID: 1001}
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(f.WriteFile("/etc/hostname", []byte("node1\n"), Attr{Mode: 0644}))
			must(f.MkdirAll("/var/lib/rancher/k3s/agent/images", Attr{Mode: 0755}))
			big := bytes.Repeat([]byte("0123456789abcdef"), 5<<20/16+7)
			must(f.CreateFile("/var/lib/rancher/k3s/agent/images/airgap.tar", bytes.NewReader(big), int64(len(big)), a))
			must(f.Symlink("/etc/hostname", "/etc/hn-fast", Attr{}))
			must(f.Symlink(strings.Repeat("long/", 30), "/etc/hn-slow", Attr{}))
			for i := 0; i < 700; i++ {
				must(f.WriteFile(fmt.Sprintf("/usr/bin/new-%04d-some-name", i), []byte(fmt.Sprint(i)), Attr{Mode: 0755}))
			}
			for i := 0; i < 300; i += 3 {
				must(f.Remove(fmt.Sprintf("/usr/bin/tool-%05d-with-a-longish-name", i)))
			}
			must(f.Remove("/etc/slow"))
			must(f.Chmod("/usr/bin/big", 02711))
			must(f.Chown("/usr/bin/big", 5, 6))
			must(f.SetXattr("/usr/bin/big", "security.capability", []byte{1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}))
			must(f.SetXattr("/usr/bin/big", "user.big", bytes.Repeat([]byte("v"), 300)))
			must(f.WriteFile("/usr/bin/big", []byte("small now"), Attr{Mode: 0700}))
			must(f.Close())
			coreFsck(t, img)
			if got := coreDebugfs(t, img, "cat /var/lib/rancher/k3s/agent/images/airgap.tar"); got != string(big) {
				t.Errorf("airgap.tar differs: %d bytes", len(got))
			}
			if got := coreDebugfs(t, img, "cat /etc/hostname"); got != "node1\n" {
				t.Errorf("hostname = %q", got)
			}
			if got := coreDebugfs(t, img, "cat /usr/bin/new-0699-some-name"); got != "699" {
				t.Errorf("new-0699 = %q", got)
			}
			st := coreDebugfs(t, img, "stat /usr/bin/big")
			if !strings.Contains(st, "Mode:  0700") || !strings.Contains(st, "User:     0") {
				t.Errorf("stat big:\n%s", st)
			}
			ea := coreDebugfs(t, img, "ea_list /usr/bin/big")
			if !strings.Contains(ea, "security.capability") || !strings.Contains(ea, "user.big") {
				t.Errorf("ea_list:\n%s", ea)
			}
		})
	}
}
