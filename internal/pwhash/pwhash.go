// Package pwhash makes crypt(3) password hashes as /etc/shadow holds them:
// yescrypt ($y$, the default of Debian 11 and newer) and sha512-crypt ($6$,
// which Debian 10 "buster" and HypriotOS, whose glibc predates yescrypt,
// can check). Passwords are hashed on the machine that runs imgbake; only
// the hash is stored.
package pwhash

import (
	"crypto/rand"
	"crypto/sha512"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/openwall/yescrypt-go"
)

// Methods.
const (
	Yescrypt = "yescrypt"
	SHA512   = "sha512-crypt"
)

// alphabet is crypt(3)'s base-64 alphabet.
const alphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Hash hashes password with method (Yescrypt or SHA512) and a new random
// salt, with the parameters Debian's libxcrypt uses by default.
func Hash(method, password string) (string, error) {
	switch method {
	case Yescrypt:
		salt, err := randomBytes(16)
		if err != nil {
			return "", err
		}
		// "j9T": yescrypt flags, N = 2^12, r = 32: libxcrypt's default cost 5.
		h, err := yescrypt.Hash([]byte(password), []byte("$y$j9T$"+encodeLE(salt)))
		if err != nil {
			return "", fmt.Errorf("hashing the password: %w", err)
		}
		return string(h), nil
	case SHA512:
		b, err := randomBytes(12)
		if err != nil {
			return "", err
		}
		return SHA512Crypt(password, encodeLE(b)[:16], 0), nil
	}
	return "", fmt.Errorf("unknown password hash method %q: use %s or %s", method, Yescrypt, SHA512)
}

// MethodOf names the method of a hash ($y$ yescrypt, $6$ sha512-crypt, ...).
func MethodOf(hash string) string {
	switch {
	case strings.HasPrefix(hash, "$y$"):
		return Yescrypt
	case strings.HasPrefix(hash, "$gy$"):
		return "gost-yescrypt"
	case strings.HasPrefix(hash, "$7$"):
		return "scrypt"
	case strings.HasPrefix(hash, "$6$"):
		return SHA512
	case strings.HasPrefix(hash, "$5$"):
		return "sha256-crypt"
	case strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		return "bcrypt"
	}
	return "unknown"
}

func randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		return nil, fmt.Errorf("generating a salt: %w", err)
	}
	return b, nil
}

// encodeLE is crypt's base 64 of b taken as little-endian 24-bit groups
// (the encoding yescrypt settings use).
func encodeLE(b []byte) string {
	var out strings.Builder
	for i := 0; i < len(b); i += 3 {
		var w uint32
		n := 0
		for j := 0; j < 3 && i+j < len(b); j++ {
			w |= uint32(b[i+j]) << (8 * j)
			n += 8
		}
		for ; n > 0; n -= 6 {
			out.WriteByte(alphabet[w&0x3f])
			w >>= 6
		}
	}
	return out.String()
}

// SHA512Crypt is sha512-crypt ("Unix crypt using SHA-256 and SHA-512",
// Ulrich Drepper, 2007/2016) of password with salt (at most 16 characters
// are used) and rounds (0 for the default 5000, which the hash then does
// not name).
func SHA512Crypt(password, salt string, rounds int) string {
	const defaultRounds = 5000
	p, s := []byte(password), []byte(salt)
	if len(s) > 16 {
		s = s[:16]
	}
	named := rounds != 0
	switch {
	case rounds == 0:
		rounds = defaultRounds
	case rounds < 1000:
		rounds = 1000
	case rounds > 999999999:
		rounds = 999999999
	}
	// Digest B: password, salt, password.
	h := sha512.New()
	h.Write(p)
	h.Write(s)
	h.Write(p)
	b := h.Sum(nil)
	// Digest A: password, salt, B for each byte of the password, then B or
	// the password for each bit of its length.
	h.Reset()
	h.Write(p)
	h.Write(s)
	n := len(p)
	for ; n > 64; n -= 64 {
		h.Write(b)
	}
	h.Write(b[:n])
	for n = len(p); n > 0; n >>= 1 {
		if n&1 != 0 {
			h.Write(b)
		} else {
			h.Write(p)
		}
	}
	a := h.Sum(nil)
	// P and S sequences.
	h.Reset()
	for range len(p) {
		h.Write(p)
	}
	pseq := repeatTo(h.Sum(nil), len(p))
	h.Reset()
	for range 16 + int(a[0]) {
		h.Write(s)
	}
	sseq := repeatTo(h.Sum(nil), len(s))
	c := a
	for i := range rounds {
		h.Reset()
		if i&1 != 0 {
			h.Write(pseq)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(sseq)
		}
		if i%7 != 0 {
			h.Write(pseq)
		}
		if i&1 != 0 {
			h.Write(c)
		} else {
			h.Write(pseq)
		}
		c = h.Sum(c[:0])
	}
	var out strings.Builder
	out.WriteString("$6$")
	if named {
		out.WriteString("rounds=" + strconv.Itoa(rounds) + "$")
	}
	out.Write(s)
	out.WriteByte('$')
	// The digest's bytes are emitted in this order, three at a time.
	for i := range 21 {
		x, y, z := i, i+21, i+42
		switch i % 3 {
		case 1:
			x, y, z = i+21, i+42, i
		case 2:
			x, y, z = i+42, i, i+21
		}
		put24(&out, c[x], c[y], c[z], 4)
	}
	put24(&out, 0, 0, c[63], 2)
	return out.String()
}

func put24(out *strings.Builder, b2, b1, b0 byte, n int) {
	w := uint32(b2)<<16 | uint32(b1)<<8 | uint32(b0)
	for range n {
		out.WriteByte(alphabet[w&0x3f])
		w >>= 6
	}
}

func repeatTo(d []byte, n int) []byte {
	out := make([]byte, 0, n)
	for len(out) < n {
		out = append(out, d[:min(len(d), n-len(out))]...)
	}
	return out
}
