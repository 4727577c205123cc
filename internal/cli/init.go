package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/internal/k3s"
	"github.com/spf13/cobra"
)

type initOptions struct {
	server, k3sVersion, base string
	force, newToken          bool
	// secretsOnly writes a missing secrets file for an existing cluster file.
	secretsOnly bool
	// user names the login user; password asks for its password.
	user, passwordMethod string
	password             bool
}

func (a *App) initCommand(g *globals) *cobra.Command {
	o := &initOptions{}
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write a cluster file (imgbake.yaml) and a secrets file with a new join token",
		Long: `init writes a commented cluster file (imgbake.yaml, or --config) and, next
to it, imgbake.secrets.yaml (mode 0600) holding a new random k3s join token.
Every image of the cluster is baked with that token, so servers and agents
find each other without copying node-token around.

init never replaces existing files unless --force is given; even then it
keeps the existing token (nodes already baked keep working) unless
--new-token is given too. The cluster file it replaces is kept as
imgbake.yaml.bak (or .bak.1, .bak.2, ...).

Without --k3s-version, init asks k3s's release channel server for the
current stable release (5 s at most) and pins that; when it cannot be
reached it pins the release compiled into imgbake, and says which.

--secrets-only writes a new secrets file (a new join token) for an
existing cluster file, e.g. after cloning a cluster repository that rightly
keeps secrets out of git. Every node must then be baked again.

Relative paths given to init (--base) are taken from the current
directory and written relative to the cluster file's directory.`,
		Example: `  imgbake init
  imgbake init --server 192.168.1.10 --base 2024-11-19-raspios-bookworm-arm64-lite.img.xz
  imgbake init --config lab/imgbake.yaml --k3s-version v1.36.4+k3s1`,
		Args: exactArgs(0, "no arguments (use --config to choose where)"),
		RunE: func(cmd *cobra.Command, _ []string) error { return a.runInit(cmd.Context(), g, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.server, "server", "", "the k3s server's address (host, IP or https:// URL; default k1)")
	f.StringVar(&o.k3sVersion, "k3s-version", "", "k3s release tag to pin (default: the stable channel's, else "+k3s.DefaultVersion+")")
	f.StringVar(&o.base, "base", "", "base image file (Raspberry Pi OS Lite .img.xz, Armbian, HypriotOS)")
	f.BoolVar(&o.force, "force", false, "replace an existing cluster file")
	f.BoolVar(&o.newToken, "new-token", false, "with --force: also replace the join token (every node must be baked again)")
	f.BoolVar(&o.secretsOnly, "secrets-only", false, "write a missing secrets file (new join token) for the existing cluster file")
	f.StringVar(&o.user, "user", "", "the login user every node gets (user: in the cluster file)")
	f.BoolVar(&o.password, "password", false, "with --user: ask for the user's password (or read one line from standard input) and keep only its hash in the secrets file")
	f.StringVar(&o.passwordMethod, "password-method", "", "hash the password with yescrypt (Bullseye and newer) or sha512-crypt (Buster, HypriotOS); default from --base's name, else yescrypt")
	return cmd
}

func (a *App) runInit(ctx context.Context, g *globals, o *initOptions) error {
	if o.newToken && !o.force {
		return usagef("--new-token replaces the join token and needs --force")
	}
	path := g.config
	if o.secretsOnly {
		return a.initSecrets(path)
	}
	secrets := filepath.Join(filepath.Dir(path), config.DefaultSecretsFile)
	if !o.force {
		for _, p := range []string{path, secrets} {
			if fileExists(p) {
				return fmt.Errorf("%s already exists; edit it, or use --force to replace the cluster file (the token is kept unless --new-token)", p)
			}
		}
	}
	if o.password && o.user == "" {
		return usagef("--password sets the password of the login user: give --user NAME too")
	}
	base, err := relativeTo(path, o.base)
	if err != nil {
		return usageError{err}
	}
	version, how := o.k3sVersion, "as given"
	if version == "" {
		version, how = pinK3s(ctx, firstNonEmpty(a.getenv("IMGBAKE_K3S_CHANNEL_URL"), k3s.ChannelURL))
	}
	tmpl := config.Template(config.TemplateOptions{Server: o.server, K3sVersion: version, Base: base, User: o.user})
	if err := checkTemplate(path, tmpl); err != nil {
		return usageError{err}
	}

	keep := false
	if o.force && !o.newToken {
		if s, err := config.LoadSecrets(secrets); err == nil && s.Token != "" {
			keep = true
		} else if fileExists(secrets) {
			return fmt.Errorf("cannot keep the token: %w; fix it, or pass --new-token to replace it", err)
		}
	}
	hash, err := a.initPassword(o)
	if err != nil {
		return err
	}
	if !keep {
		tok, err := config.NewToken()
		if err != nil {
			return err
		}
		if err := config.WriteSecrets(secrets, &config.Secrets{Token: tok, PasswordHash: hash}, o.force); err != nil {
			return err
		}
	} else if hash != "" {
		s, err := config.LoadSecrets(secrets)
		if err != nil {
			return err
		}
		s.PasswordHash = hash
		if err := config.WriteSecrets(secrets, s, true); err != nil {
			return err
		}
	}
	backup, err := backupFile(path)
	if err != nil {
		return err
	}
	if err := config.WriteFile(path, tmpl, 0o644, o.force); err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "wrote %s (k3s %s, %s)\n", path, version, how)
	if backup != "" {
		fmt.Fprintf(a.Stdout, "kept the cluster file it replaced as %s\n", backup)
	}
	if keep {
		fmt.Fprintf(a.Stdout, "kept the join token in %s\n", secrets)
	} else {
		fmt.Fprintf(a.Stdout, "wrote %s (mode 0600: it holds the join token; keep it private and out of version control)\n", secrets)
	}
	fmt.Fprintf(a.Stdout, "next: edit %s (server, base, nodes), then run: imgbake build --all\n", path)
	return nil
}

// checkTemplate makes sure the flags gave a cluster file Load accepts.
func checkTemplate(path string, tmpl []byte) error {
	dir, err := os.MkdirTemp("", "imgbake-init")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, filepath.Base(path))
	if err := os.WriteFile(p, tmpl, 0o600); err != nil {
		return err
	}
	if _, err := config.Load(p); err != nil {
		var ps config.Problems
		if errors.As(err, &ps) && len(ps) > 0 {
			return fmt.Errorf("bad --server, --k3s-version or --base: %s: %s", ps[0].Field, ps[0].Msg)
		}
		return err
	}
	return nil
}

// pinK3s returns the k3s release init pins and how it was chosen: the
// stable channel's, or the compiled-in default when the channel server at
// url cannot be reached within 5 seconds.
func pinK3s(ctx context.Context, url string) (version, how string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := k3s.ChannelVersion(ctx, &http.Client{Timeout: 5 * time.Second}, url, "stable")
	if err != nil {
		return k3s.DefaultVersion, fmt.Sprintf("the release compiled into imgbake: the k3s release channel could not be asked (%v)", err)
	}
	return v, "the current stable release"
}

// relativeTo turns p, given on the command line relative to the current
// directory, into a path relative to the directory of the cluster file
// (where Load resolves it). Absolute paths, ~/ paths and "" stay as they
// are.
func relativeTo(clusterFile, p string) (string, error) {
	if p == "" || filepath.IsAbs(p) || strings.HasPrefix(p, "~/") {
		return p, nil
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("--base %s: %w", p, err)
	}
	dir, err := filepath.Abs(filepath.Dir(clusterFile))
	if err != nil {
		return "", fmt.Errorf("--config %s: %w", clusterFile, err)
	}
	rel, err := filepath.Rel(dir, abs)
	if err != nil {
		return abs, nil
	}
	return rel, nil
}

// backupFile copies path, when it exists, to path.bak (or .bak.1, .bak.2,
// ... when that exists) and returns the backup's name, "" when there was no
// file.
func backupFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("keeping a backup of %s: %w", path, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("keeping a backup of %s: %w", path, err)
	}
	for i := 0; i < 1000; i++ {
		b := path + ".bak"
		if i > 0 {
			b = fmt.Sprintf("%s.bak.%d", path, i)
		}
		if fileExists(b) {
			continue
		}
		if err := config.WriteFile(b, data, st.Mode().Perm(), false); err != nil {
			return "", fmt.Errorf("keeping a backup of %s: %w", path, err)
		}
		return b, nil
	}
	return "", fmt.Errorf("keeping a backup of %s: %s.bak to .bak.999 all exist; delete some", path, path)
}

// initSecrets writes a new secrets file for the existing cluster file at
// path: the secrets-file it names, which must not exist.
func (a *App) initSecrets(path string) error {
	c, err := a.loadCluster(path)
	if err != nil {
		return err
	}
	secrets := c.Path(c.SecretsFile)
	if fileExists(secrets) {
		return fmt.Errorf("%s already exists; it holds the join token the nodes were baked with, so init does not replace it (init --force --new-token replaces it and the cluster file)", secrets)
	}
	tok, err := config.NewToken()
	if err != nil {
		return err
	}
	if err := config.WriteSecrets(secrets, &config.Secrets{Token: tok}, false); err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "wrote %s (mode 0600) with a new join token for %s; keep it private and out of version control\n", secrets, path)
	fmt.Fprintf(a.Stdout, "every node must be baked again (imgbake build --all) and reflashed: nodes baked with another token cannot join this cluster\n")
	return nil
}
