package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/imgbake/imgbake/internal/pwhash"
	"golang.org/x/term"
)

// initPassword asks for the login user's password (twice, without echo,
// on a terminal; one line from standard input otherwise) and returns its
// hash, or "" without --password. The password itself is never stored.
func (a *App) initPassword(o *initOptions) (string, error) {
	if !o.password {
		return "", nil
	}
	method := o.passwordMethod
	if method == "" {
		method = pwhash.Yescrypt
		if b := strings.ToLower(o.base); strings.Contains(b, "buster") || strings.Contains(b, "hypriot") {
			method = pwhash.SHA512 // glibc 2.28 has no yescrypt
		}
	}
	if method != pwhash.Yescrypt && method != pwhash.SHA512 {
		return "", usagef("--password-method %q: use %s or %s", method, pwhash.Yescrypt, pwhash.SHA512)
	}
	pw, err := a.readPassword(o.user)
	if err != nil {
		return "", err
	}
	return pwhash.Hash(method, pw)
}

func (a *App) readPassword(user string) (string, error) {
	if f, ok := a.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		ask := func(prompt string) (string, error) {
			fmt.Fprint(a.Stderr, prompt)
			b, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(a.Stderr)
			if err != nil {
				return "", fmt.Errorf("reading the password: %w", err)
			}
			return string(b), nil
		}
		pw, err := ask("Password for " + user + ": ")
		if err != nil {
			return "", err
		}
		again, err := ask("Repeat it: ")
		if err != nil {
			return "", err
		}
		if pw != again {
			return "", errors.New("the passwords do not match; run init again")
		}
		return checkPassword(pw)
	}
	line, err := bufio.NewReader(a.Stdin).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", fmt.Errorf("reading the password from standard input: %w (pipe it in, e.g. printf '%%s\\n' \"$PW\" | imgbake init --user %s --password)", err, user)
	}
	return checkPassword(strings.TrimRight(line, "\r\n"))
}

func checkPassword(pw string) (string, error) {
	if pw == "" {
		return "", errors.New("the password is empty; give one, or leave out --password and use SSH keys only")
	}
	return pw, nil
}
