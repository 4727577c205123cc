package image

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgbake/imgbake/image/plan"
	"github.com/imgbake/imgbake/internal/fixture"
)

// TestBuildEveryFamily writes the cmdline edit where each family keeps
// its kernel command line, plus a root file, and checks both filesystems.
func TestBuildEveryFamily(t *testing.T) {
	fixture.RequireTools(t, "debugfs", "fsck.vfat", "mtype")
	for _, name := range fixture.Names() {
		t.Run(name, func(t *testing.T) {
			base := prepared(t, name, false)
			info, err := Inspect(base.Path)
			if err != nil {
				t.Fatal(err)
			}
			p := &plan.Plan{
				Entries: []plan.Entry{{Part: plan.Root, Path: "/etc/rancher/k3s/config.yaml", Kind: plan.File, Mode: 0o600, Data: []byte("node-name: k5\n")}},
				Edits: []plan.Edit{{Part: info.OS.CmdlinePart, Path: info.OS.CmdlinePath, Desc: "cgroups",
					Func: func(old []byte) ([]byte, error) {
						if old == nil {
							t.Errorf("%s missing", info.OS.CmdlinePath)
						}
						return append(bytes.TrimRight(old, "\n"), []byte(" cgroup_enable=memory\n")...), nil
					}}},
			}
			out := filepath.Join(t.TempDir(), "k5.img")
			res, err := Build(context.Background(), BuildOptions{Base: base, Info: info, Output: out, Plan: p, Epoch: time.Unix(1700000000, 0)})
			if err != nil {
				t.Fatal(err)
			}
			got := checkImage(t, res.Image)
			if got.OS != info.OS {
				t.Errorf("built image detects as %+v, base as %+v", got.OS, info.OS)
			}
			var cmdline string
			if info.OS.CmdlinePart == plan.Boot {
				bp, _ := got.Partition(got.BootPartition)
				cmdline = fixture.Run(t, "mtype", "-i", res.Image+"@@"+itoa(bp.Start), "::"+info.OS.CmdlinePath)
			} else {
				rp, _ := got.Partition(got.RootPartition)
				cmdline = debugfsR(t, res.Image, rp, "cat "+info.OS.CmdlinePath)
			}
			if !strings.HasSuffix(cmdline, " cgroup_enable=memory\n") {
				t.Errorf("cmdline: %q", cmdline)
			}
		})
	}
}

// gptCopy rebuilds the fixture with a GPT partition table, same offsets.
func gptCopy(t *testing.T, name string) string {
	t.Helper()
	src := fixture.Cached(t, name)
	info, err := Inspect(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "gpt.img")
	fixture.Run(t, "truncate", "-s", itoa(info.Size+1<<20), dst)
	script := "label: gpt\nunit: sectors\n"
	for _, p := range info.Partitions {
		typ := "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
		if strings.HasPrefix(p.FS, "fat") {
			typ = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
		}
		script += "start=" + itoa(p.Start/512) + ", size=" + itoa(p.Size/512) + ", type=" + typ + "\n"
	}
	cmd := exec.Command("sfdisk", "-q", dst)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	for _, p := range info.Partitions {
		fixture.Run(t, "dd", "if="+src, "of="+dst, "bs=1M", "skip="+itoa(p.Start>>20), "seek="+itoa(p.Start>>20),
			"count="+itoa(p.Size>>20), "conv=notrunc,sparse", "status=none")
	}
	return dst
}

func TestBuildGPT(t *testing.T) {
	fixture.RequireTools(t, "debugfs", "fsck.vfat")
	img := gptCopy(t, fixture.RaspiOSBookwormArm64)
	info, err := Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	if info.Table != "gpt" || info.OS.Family != "raspios" || info.BootPartition != 1 || info.RootPartition != 2 {
		t.Fatalf("GPT image: %+v", info)
	}
	base, err := PrepareBase(context.Background(), img, "", PrepareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := sha(mustRead(t, img))
	out := filepath.Join(t.TempDir(), "k5.img")
	res, err := Build(context.Background(), BuildOptions{Base: base, Output: out, Plan: testPlan(t, 1<<20),
		Size: info.Size + 200<<20, Epoch: time.Unix(1700000000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if sha(mustRead(t, img)) != before || base.Path != img {
		t.Error("the raw base image was modified or not used in place")
	}
	if v := fixture.Run(t, "sfdisk", "--verify", res.Image); !strings.Contains(v, "No errors detected") {
		t.Errorf("sfdisk --verify:\n%s", v)
	}
	got := checkImage(t, res.Image)
	root, _ := got.Partition(got.RootPartition)
	if root.end() != res.Size-33*512 {
		t.Errorf("GPT root ends at %d, want %d (image %d)", root.end(), res.Size-33*512, res.Size)
	}
	if got.RootSize <= info.RootSize+150<<20 {
		t.Errorf("root filesystem %d bytes, base %d: not grown", got.RootSize, info.RootSize)
	}
	if _, err := os.Stat(res.Bmap); err != nil {
		t.Error(err)
	}
}
