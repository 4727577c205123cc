package fat

import (
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestCheckRefusesDamage damages the boot partition as a bad download or a
// failing card does (zeroed boot sector, random bytes over the FAT, random
// bytes over the root directory, FAT copies that differ) and expects Open
// or Check to say the filesystem is corrupt, as fsck.vfat -n does, while
// every undamaged filesystem, before and after edits, passes both.
func TestCheckRefusesDamage(t *testing.T) {
	for _, c := range []struct {
		bits string
		mib  int
	}{{"32", 64}, {"16", 32}, {"12", 4}} {
		t.Run("fat"+c.bits, func(t *testing.T) {
			img := mkfat(t, c.mib, c.bits)
			fsys, _ := openRW(t, img)
			if err := fsys.Check(); err != nil {
				t.Fatalf("clean filesystem: %v", err)
			}
			if err := fsys.WriteFile("/firstboot/imgbake/node.txt", []byte("k5\n")); err != nil {
				t.Fatal(err)
			}
			if err := fsys.Check(); err != nil {
				t.Fatalf("after an edit: %v", err)
			}
			clean, _ := os.ReadFile(img)
			rootOff := fsys.dataOff - fsys.rootEnts*entSize
			if fsys.typ == 32 {
				rootOff = fsys.dataOff + int64(fsys.rootClus-2)*fsys.ClusterSize()
			}
			fat1 := fsys.fatOff(0)
			rng := rand.New(rand.NewPCG(7, 9))
			random := func(n int) []byte {
				b := make([]byte, n)
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
				return b
			}
			for _, d := range []struct {
				name string
				off  int64
				data []byte
			}{
				{"zeroed boot sector", 0, make([]byte, 512)},
				{"random FAT", fat1, random(4096)},
				{"random root directory", rootOff, random(1024)},
				{"FAT copies differ", fsys.fatOff(1) + 8, []byte{0xff, 0xff}},
			} {
				t.Run(d.name, func(t *testing.T) {
					bad := append([]byte(nil), clean...)
					copy(bad[d.off:], d.data)
					p := t.TempDir() + "/bad.img"
					if err := os.WriteFile(p, bad, 0o644); err != nil {
						t.Fatal(err)
					}
					if exec.Command("fsck.vfat", "-n", p).Run() == nil {
						t.Fatalf("fsck.vfat -n accepts the damage: not a useful case")
					}
					f, _ := os.Open(p)
					defer f.Close()
					got, err := Open(f, 0, int64(len(bad)), true, time.Time{})
					if err == nil {
						err = got.Check()
					}
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("damaged filesystem: %v, want ErrCorrupt", err)
					}
				})
			}
		})
	}
}
