package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/imgbake/imgbake/image/flash"
	"github.com/imgbake/imgbake/internal/progress"
)

// flashCard is one card of a multi-card flash.
type flashCard struct {
	node, target string
	in           *flashInput
	isFile       bool
	loss         string // what writing destroys, for the question
	wrote        bool   // some bytes were written
	res          *flash.Result
	err          error
}

// flashPairs parses node=device arguments; ok is false when no argument
// has that form.
func flashPairs(args []string) (pairs [][2]string, ok bool, err error) {
	for _, arg := range args {
		node, target, found := strings.Cut(arg, "=")
		if found != ok && len(pairs) > 0 || found && (node == "" || target == "") {
			return nil, false, usagef("give node=device pairs (k5=/dev/sdb k6=/dev/sdc), got %q", arg)
		}
		ok = found
		if found {
			pairs = append(pairs, [2]string{node, target})
		}
	}
	if ok && len(pairs) != len(args) {
		return nil, false, usagef("give node=device pairs (k5=/dev/sdb k6=/dev/sdc) only")
	}
	return pairs, ok, nil
}

// unflashedPairs pairs the devices with the next nodes of the cluster file
// (in its order) that have an image in the output directory whose build no
// successful flash in the flash log holds.
func (a *App) unflashedPairs(g *globals, devices []string) ([][2]string, error) {
	c, err := a.loadCluster(g.config)
	if err != nil {
		return nil, err
	}
	out := c.Path(c.OutputDir)
	hist, err := flash.ReadHistory(out)
	if err != nil {
		return nil, err
	}
	var next []string
	for _, n := range c.Nodes {
		files, err := a.resolveImage(g, n.Name)
		if err != nil {
			continue // not built
		}
		if !flash.Flashed(hist, buildID(files.image)) {
			next = append(next, n.Name)
		}
	}
	if len(next) < len(devices) {
		return nil, fmt.Errorf("%d device(s) given but only %d built node(s) are not flashed yet (%s; see %s): give fewer devices, or name the nodes (k5=/dev/sdb)",
			len(devices), len(next), strings.Join(next, ", "), filepath.Join(out, flash.HistoryFile))
	}
	pairs := make([][2]string, len(devices))
	for i, d := range devices {
		pairs[i] = [2]string{next[i], d}
	}
	return pairs, nil
}

// buildID identifies the build of an image: the sha256 of its manifest,
// else of its .bmap, else of its name, size and modification time.
func buildID(image string) string {
	var data []byte
	for _, ext := range []string{".manifest.json", ".bmap"} {
		if p := flash.SidecarFor(image, ext); p != "" {
			if b, err := os.ReadFile(p); err == nil {
				data = b
				break
			}
		}
	}
	if data == nil {
		st, err := os.Stat(image)
		if err != nil {
			return ""
		}
		data = fmt.Appendf(nil, "%s %d %d", filepath.Base(image), st.Size(), st.ModTime().UnixNano())
	}
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// runFlashMany writes several nodes to several cards at once: every card
// is checked and the whole set confirmed once before anything is written;
// then each is written and verified in parallel. A failing card fails only
// its node.
func (a *App) runFlashMany(ctx context.Context, g *globals, o *flashOptions, pairs [][2]string) error {
	var cards []*flashCard
	defer func() {
		for _, c := range cards {
			c.in.src.Close()
		}
	}()
	seen := map[string]string{}
	for _, p := range pairs {
		if prev, dup := seen[p[1]]; dup {
			return usagef("%s is given for both %s and %s: one card per node", p[1], prev, p[0])
		}
		seen[p[1]] = p[0]
		in, err := a.openFlashInput(g, o, p[0])
		if err != nil {
			return fmt.Errorf("%s: %w", p[0], err)
		}
		c := &flashCard{node: p[0], target: p[1], in: in}
		cards = append(cards, c)
		if c.isFile, c.loss, err = a.checkTarget(ctx, o, c.target, in.files.image, in.size); err != nil {
			return fmt.Errorf("%s: %w", c.node, err)
		}
	}
	if err := sameTargets(cards); err != nil {
		return err
	}
	var q strings.Builder
	n := 0
	for _, c := range cards {
		if c.loss != "" {
			fmt.Fprintf(&q, "  %s to %s\n", filepath.Base(c.in.files.image), c.loss)
			n++
		}
	}
	if n > 0 {
		if err := a.confirm(o, fmt.Sprintf("About to write:\n%sEVERYTHING on these %d target(s) will be lost. Type yes to continue: ", q.String(), n)); err != nil {
			return err
		}
	}
	// From here on an interrupt stops every write cleanly.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, c := range cards {
		_, what := c.in.writeSize()
		fmt.Fprintf(a.Stderr, "Writing %s to %s: %s\n", filepath.Base(c.in.files.image), c.target, what)
	}
	lines := progress.NewLines(a.Stderr)
	var wg sync.WaitGroup
	for _, c := range cards {
		line := lines.Add(fmt.Sprintf("%s %s", c.node, c.target))
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.res, c.err = a.flashCard(ctx, g, o, c, line)
			if c.err != nil {
				line.Finish("FAILED")
			} else {
				line.Finish("done")
			}
		}()
	}
	wg.Wait()
	lines.Done()
	return a.flashSummary(cards)
}

// sameTargets refuses two targets that are the same device or file under
// different names.
func sameTargets(cards []*flashCard) error {
	for i, c := range cards {
		st, err := os.Stat(c.target)
		if err != nil {
			continue // a new file
		}
		for _, d := range cards[:i] {
			if dst, err := os.Stat(d.target); err == nil && (os.SameFile(st, dst) || st.Sys() != nil && sameDevice(st, dst)) {
				return usagef("%s (for %s) and %s (for %s) are the same target: one card per node", d.target, d.node, c.target, c.node)
			}
		}
	}
	return nil
}

// sameDevice reports whether two device nodes name the same device.
func sameDevice(a, b os.FileInfo) bool {
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && a.Mode()&os.ModeDevice != 0 && b.Mode()&os.ModeDevice != 0 && sa.Rdev == sb.Rdev
}

// flashCard writes and verifies one card, drawing its progress on line.
func (a *App) flashCard(ctx context.Context, g *globals, o *flashOptions, c *flashCard, line *progress.Line) (*flash.Result, error) {
	dst, err := flash.OpenTarget(c.target, flash.TargetOptions{AllowFile: o.allowFile, MinSize: max(c.in.size, 0)})
	if err != nil {
		return nil, err
	}
	defer dst.Close()
	total, _ := c.in.writeSize()
	phase := "write"
	line.Phase("writing", total)
	res, err := flash.Write(ctx, c.in.src, dst, flash.Options{
		Map:      c.in.m,
		NoVerify: o.noVerify,
		Log:      a.logger(g).With("node", c.node, "target", c.target),
		Progress: func(p string, n int64) {
			if p != phase {
				phase = p
				line.Phase("verifying", verifySize(c.in.m, total))
			}
			if p == "write" && n > 0 {
				c.wrote = true
			}
			line.Add(n)
		},
	})
	if err != nil {
		return res, flashError(err)
	}
	return res, nil
}

// flashSummary says what each card now holds, records the flashes in the
// flash log, and fails when any card failed.
func (a *App) flashSummary(cards []*flashCard) error {
	tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tTARGET\tNOW HOLDS")
	var failed []string
	logs := map[string][]flash.Record{}
	for _, c := range cards {
		img := filepath.Base(c.in.files.image)
		rec := flash.Record{Time: time.Now().UTC(), Node: c.node, Image: img, Build: buildID(c.in.files.image),
			Target: c.target, Device: c.loss}
		var holds string
		var inc *flash.IncompleteError
		var mm *flash.MismatchError
		switch {
		case c.err == nil:
			rec.OK, rec.Verified = true, c.res.Verified
			holds = fmt.Sprintf("%s (%s written in %.1fs", img, progress.Bytes(c.res.Bytes), c.res.WriteTime.Seconds())
			if c.res.Verified {
				holds += ", verified)"
			} else {
				holds += ", not verified)"
			}
		case errors.As(c.err, &inc):
			holds = "an incomplete image that will not boot: flash it again (" + c.err.Error() + ")"
		case errors.As(c.err, &mm):
			holds = img + " that does NOT read back right: " + c.err.Error()
		case c.wrote:
			holds = img + ", written but not checked: " + c.err.Error()
		default:
			holds = "what it held before (nothing written): " + c.err.Error()
		}
		if c.err != nil {
			rec.Error = c.err.Error()
			failed = append(failed, c.node)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.node, c.target, holds)
		dir := filepath.Dir(c.in.files.image)
		logs[dir] = append(logs[dir], rec)
	}
	tw.Flush()
	for dir, recs := range logs {
		if err := flash.AppendHistory(dir, recs...); err != nil {
			fmt.Fprintf(a.Stderr, "imgbake: warning: %v\n", err)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d card(s) failed (%s); the others are written", len(failed), len(cards), strings.Join(failed, ", "))
	}
	return nil
}
