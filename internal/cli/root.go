// Package cli is imgbake's command line. It is a library so that tests run
// the whole CLI in-process: App holds the process's streams and environment
// and Execute returns the exit code.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// App is one run of imgbake.
type App struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Env looks up environment variables (os.Getenv); nil means none are set.
	Env func(string) string
}

// usageError is a mistake in how imgbake was called (exit code 2).
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// globals are the flags every command has.
type globals struct {
	config  string
	verbose bool
}

// Execute runs imgbake with args (without the program name) and returns the
// exit code: 0 ok, 1 failure, 2 usage error.
func (a *App) Execute(ctx context.Context, args []string) int {
	if a.Stdout == nil {
		a.Stdout = io.Discard
	}
	if a.Stderr == nil {
		a.Stderr = io.Discard
	}
	if a.Stdin == nil {
		a.Stdin = strings.NewReader("")
	}
	if path := a.getenv("IMGBAKE_CPUPROFILE"); path != "" {
		stop, err := startCPUProfile(path)
		if err != nil {
			fmt.Fprintf(a.Stderr, "imgbake: IMGBAKE_CPUPROFILE: %v\n", err)
			return ExitFailure
		}
		defer stop()
	}
	g := &globals{}
	root := a.rootCommand(g)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		fmt.Fprintf(a.Stderr, "imgbake: %v\nRun 'imgbake --help' for usage.\n", err)
		return ExitUsage
	}
	fmt.Fprintf(a.Stderr, "imgbake: %v\n", err)
	return ExitFailure
}

// startCPUProfile writes a CPU profile of this run to path (for `go tool
// pprof`, see docs/testing.md); stop finishes it.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("starting the CPU profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// isCobraUsage recognises the errors cobra makes itself for an unknown
// command (it has no typed error for them).
func isCobraUsage(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unknown command") || strings.HasPrefix(s, "unknown flag") ||
		strings.HasPrefix(s, "unknown shorthand flag") || strings.HasPrefix(s, "invalid argument")
}

func (a *App) rootCommand(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "imgbake",
		Short: "Bake per-node k3s images for Raspberry Pi clusters",
		Long: `imgbake bakes ready-to-flash k3s images for Raspberry Pi clusters from stock
Raspberry Pi OS, Armbian or HypriotOS images. Each image boots, sets its
hostname and joins the k3s server with its labels and taints: no SSH, no
copying node-token.`,
		Example: `  imgbake init --server 192.168.1.10 --base 2024-11-19-raspios-bookworm-arm64-lite.img.xz
  imgbake build --profile server k1
  imgbake build --profile worker k5
  imgbake build --all`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SetIn(a.Stdin)
	root.SetOut(a.Stdout)
	root.SetErr(a.Stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVarP(&g.config, "config", "c", "imgbake.yaml", "cluster file")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log what imgbake does")

	root.AddCommand(a.initCommand(g))
	root.AddCommand(a.buildCommand(g))
	root.AddCommand(a.checkCommand(g))
	root.AddCommand(a.inspectCommand(g))
	root.AddCommand(a.versionCommand())
	root.AddCommand(a.completionCommand())
	root.AddCommand(a.flashCommand(g))
	root.AddCommand(a.verifyCommand(g))
	root.AddCommand(a.netbootCommand(g))
	return root
}

// getenv reads an environment variable through App.Env.
func (a *App) getenv(k string) string {
	if a.Env == nil {
		return ""
	}
	return a.Env(k)
}

// logger logs to stderr: warnings, or everything with --verbose.
func (a *App) logger(g *globals) *slog.Logger {
	level := slog.LevelWarn
	if g.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(a.Stderr, &slog.HandlerOptions{Level: level, ReplaceAttr: func(_ []string, at slog.Attr) slog.Attr {
		if at.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return at
	}}))
}

// expandHome expands a leading ~/ with $HOME.
func (a *App) expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if h := a.getenv("HOME"); h != "" {
			return filepath.Join(h, rest)
		}
	}
	return p
}

// exactArgs and the like return usage errors.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("expected %s, got %d argument(s)", what, len(args))
		}
		return nil
	}
}

// fileExists reports whether path names an existing file.
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// defaultCacheDir returns dir, or $XDG_CACHE_HOME/imgbake, or
// ~/.cache/imgbake.
func (a *App) defaultCacheDir(dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	if x := a.getenv("XDG_CACHE_HOME"); x != "" {
		return filepath.Join(x, "imgbake"), nil
	}
	if h := a.getenv("HOME"); h != "" {
		return filepath.Join(h, ".cache", "imgbake"), nil
	}
	return "", usagef("no cache directory: set HOME, cache-dir: in the cluster file, or pass --cache-dir")
}
