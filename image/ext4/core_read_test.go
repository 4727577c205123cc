package ext4

import (
	"bytes"
	"testing"
)

// coreKinds are mkfs.ext4 variants: the real bases' feature sets at 4 KiB blocks and
// 256-byte inodes, plus 1 KiB blocks with 128- and 256-byte inodes.
var coreKinds = map[string][]string{
	"default":      {"-T", "default"},
	"pigen":        {"-T", "default", "-O", "^64bit,^huge_file"},
	"raspbian-old": {"-T", "default", "-O", "^metadata_csum,^64bit"},
	"armbian":      {"-T", "default", "-m", "2", "-O", "^orphan_file"},
	"nocsum":       {"-T", "default", "-O", "^metadata_csum,^uninit_bg"},
	"csum-seed":    {"-T", "default", "-O", "metadata_csum_seed"},
	"tea":          {"-T", "default", "--hash=tea"},
	"legacy":       {"-T", "default", "--hash=legacy"},
	"1k":           {"-T", "small", "-I", "128"},
	"1k-256":       {"-b", "1024", "-I", "256", "-O", "^64bit"},
	"ext3":         {"-T", "default", "-t", "ext3"},
	"ext2-1k":      {"-T", "small", "-t", "ext2"},
}

func TestCoreRead(t *testing.T) {
	for kind, opts := range coreKinds {
		t.Run(kind, func(t *testing.T) {
			img := coreMkfs(t, 64, 600, opts...)
			f, fh := coreOpenMode(t, img, true)
			defer fh.Close()
			for _, p := range []string{"/etc/hostname", "/etc/ssh/sshd_config", "/usr/bin/big", "/usr/bin/tool-00123-with-a-longish-name"} {
				got, err := f.ReadFile(p)
				if err != nil {
					t.Fatalf("ReadFile %s: %v", p, err)
				}
				want := []byte(coreDebugfs(t, img, "cat "+p))
				if !bytes.Equal(got, want) {
					t.Errorf("%s: content differs (%d vs %d bytes)", p, len(got), len(want))
				}
			}
			for p, want := range map[string]string{"/etc/fast": "/etc/hostname", "/etc/slow": string(bytes.Repeat([]byte("x/"), 40)) + "target"} {
				got, err := f.Readlink(p)
				if err != nil || got != want {
					t.Errorf("Readlink %s = %q, %v", p, got, err)
				}
			}
			ents, err := f.ReadDir("/usr/bin")
			if err != nil || len(ents) != 601 {
				t.Fatalf("ReadDir: %d entries, %v", len(ents), err)
			}
			n := 0
			if err := f.Walk("/", func(p string, fi *FileInfo, err error) error {
				if err != nil {
					return err
				}
				n++
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if n < 610 {
				t.Errorf("Walk saw %d", n)
			}
		})
	}
}
