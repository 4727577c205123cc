package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/imgbake/imgbake/internal/tempfile"
)

// Secrets is the secrets file: what must never be printed, logged or put on
// the FAT partition.
type Secrets struct {
	// Token is the pre-shared k3s join token (K3S_TOKEN). Servers are
	// started with it and agents join with it, so images can be baked
	// before the server exists.
	Token string `yaml:"token"`
	// PasswordHash is the crypt(3) hash of the login user's password
	// (user: in the cluster file); WiFi is the Wi-Fi passphrase or PSK.
	PasswordHash string     `yaml:"password-hash"`
	WiFi         WiFiSecret `yaml:"wifi"`
	// Nodes holds a node's own secrets, by node name.
	Nodes map[string]NodeSecrets `yaml:"nodes"`
}

var tokenRE = regexp.MustCompile(`^[A-Za-z0-9._\-]{16,}$|^K10[0-9a-f]{64}::[^:\s]+:[^\s]+$`)

// NewToken returns a new random token: 32 bytes from crypto/rand, hex.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		return "", fmt.Errorf("generating the token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// LoadSecrets reads the secrets file. It refuses a file that group or others
// may read, since it holds the join token.
func LoadSecrets(path string) (*Secrets, error) {
	// A copy an imgbake killed while writing the file left holds the token.
	tempfile.RemoveStale(filepath.Dir(path), nil)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("reading secrets: %s does not exist; run `imgbake init` to create it (or set secrets-file: in the cluster file)", path)
		}
		return nil, fmt.Errorf("reading secrets: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading secrets: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by group or others (mode %04o) and holds the cluster join token; make it private with: chmod 600 %s", path, perm, shellQuote(path))
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading secrets: %w", err)
	}
	var s Secrets
	d := NewDoc(path)
	if err := d.Decode(data, &s); err != nil {
		return nil, err
	}
	switch {
	case s.Token == "":
		d.Errorf("token", "missing: the join token is required (`imgbake init --force` makes a new one, but nodes baked with the old one will no longer join)")
	case !tokenRE.MatchString(s.Token):
		// Never echo the token itself.
		d.Errorf("token", "not a usable k3s token: use at least 16 characters of letters, digits, '.', '_' and '-' (or a full K10... token)")
	}
	checkSecretSettings(d, "", s.PasswordHash, s.WiFi)
	for name, ns := range s.Nodes {
		checkSecretSettings(d, "nodes."+name, ns.PasswordHash, ns.WiFi)
	}
	if err := d.Err(); err != nil {
		return nil, err
	}
	return &s, nil
}

// WriteSecrets writes s to path with mode 0600 (via a temp file and rename).
// It refuses to replace an existing file unless force is set.
func WriteSecrets(path string, s *Secrets, force bool) error {
	var b strings.Builder
	b.WriteString("# imgbake secrets: the k3s join token every node of this cluster is baked with.\n")
	b.WriteString("# Keep this file private (chmod 600) and out of version control.\n")
	b.WriteString("# Changing the token means re-baking every node (and the server).\n")
	fmt.Fprintf(&b, "token: %s\n", s.Token)
	if s.PasswordHash != "" {
		b.WriteString("# The login user's password, hashed (crypt(3)); the password itself is not kept.\n")
		fmt.Fprintf(&b, "password-hash: %s\n", yamlQuote(s.PasswordHash))
	}
	if s.WiFi != (WiFiSecret{}) {
		b.WriteString("wifi:\n")
		if s.WiFi.Passphrase != "" {
			fmt.Fprintf(&b, "  passphrase: %s\n", yamlQuote(s.WiFi.Passphrase))
		}
		if s.WiFi.PSK != "" {
			fmt.Fprintf(&b, "  psk: %s\n", yamlQuote(s.WiFi.PSK))
		}
	}
	return WriteFile(path, []byte(b.String()), 0o600, force)
}

// WriteFile writes data to path through a temp file in the same directory
// and a rename (tempfile.WriteFile), so path is either the old or the new
// content. Unless force is set it refuses to replace an existing file.
func WriteFile(path string, data []byte, mode os.FileMode, force bool) error {
	if !force {
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("%s already exists; use --force to replace it", path)
		}
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if force {
		return tempfile.WriteFile(path, data, mode)
	}
	err := tempfile.WriteNew(path, data, mode)
	if errors.Is(err, os.ErrExist) {
		// It appeared since the check above.
		return fmt.Errorf("%s already exists; use --force to replace it", path)
	}
	return err
}

// yamlQuote writes s as a single-quoted YAML scalar, which holds '$' and
// every printable character as is.
func yamlQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func shellQuote(s string) string {
	if regexp.MustCompile(`^[A-Za-z0-9._/\-]+$`).MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
