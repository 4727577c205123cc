package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/imgbake/imgbake/internal/config"
	"github.com/spf13/cobra"
)

type initOptions struct {
	server, k3sVersion, base string
	force, newToken          bool
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
--new-token is given too.`,
		Example: `  imgbake init
  imgbake init --server 192.168.1.10 --base 2024-11-19-raspios-bookworm-arm64-lite.img.xz
  imgbake init --config lab/imgbake.yaml --k3s-version v1.31.4+k3s1`,
		Args: exactArgs(0, "no arguments (use --config to choose where)"),
		RunE: func(cmd *cobra.Command, _ []string) error { return a.runInit(g, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.server, "server", "", "the k3s server's address (host, IP or https:// URL; default k1)")
	f.StringVar(&o.k3sVersion, "k3s-version", "", "k3s release tag to pin (default "+config.DefaultK3sVersion+")")
	f.StringVar(&o.base, "base", "", "base image file (Raspberry Pi OS Lite .img.xz, Armbian, HypriotOS)")
	f.BoolVar(&o.force, "force", false, "replace an existing cluster file")
	f.BoolVar(&o.newToken, "new-token", false, "with --force: also replace the join token (every node must be baked again)")
	f.StringVar(&o.user, "user", "", "the login user every node gets (user: in the cluster file)")
	f.BoolVar(&o.password, "password", false, "with --user: ask for the user's password (or read one line from standard input) and keep only its hash in the secrets file")
	f.StringVar(&o.passwordMethod, "password-method", "", "hash the password with yescrypt (Bullseye and newer) or sha512-crypt (Buster, HypriotOS); default from --base's name, else yescrypt")
	return cmd
}

func (a *App) runInit(g *globals, o *initOptions) error {
	if o.newToken && !o.force {
		return usagef("--new-token replaces the join token and needs --force")
	}
	path := g.config
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
	tmpl := config.Template(config.TemplateOptions{Server: o.server, K3sVersion: o.k3sVersion, Base: o.base, User: o.user})
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
	if err := config.WriteFile(path, tmpl, 0o644, o.force); err != nil {
		return err
	}
	fmt.Fprintf(a.Stdout, "wrote %s\n", path)
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
