package pwhash

import (
	"os/exec"
	"strings"
	"testing"
)

// The examples of Drepper's specification.
func TestSHA512CryptSpec(t *testing.T) {
	for _, c := range []struct {
		salt, pw string
		rounds   int
		want     string
	}{
		{"saltstring", "Hello world!", 0, "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
		{"saltstringsaltstring", "Hello world!", 10000, "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."},
		{"toolongsaltstring", "This is just a test", 5000, "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"},
		{"roundstoolow", "the minimum number is still observed", 10, "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."},
	} {
		if got := SHA512Crypt(c.pw, c.salt, c.rounds); got != c.want {
			t.Errorf("SHA512Crypt(%q, %q, %d) = %s, want %s", c.pw, c.salt, c.rounds, got, c.want)
		}
	}
}

// TestAgainstLibcrypt checks new hashes with the host's crypt(3) (libxcrypt,
// through perl) and openssl passwd, which know both methods.
func TestAgainstLibcrypt(t *testing.T) {
	if _, err := exec.LookPath("perl"); err != nil {
		t.Skip("perl not installed: cannot check hashes with the system's crypt(3)")
	}
	for _, m := range []string{Yescrypt, SHA512} {
		for _, pw := range []string{"correct horse battery staple", "ä€ 'quote' $dollar", "x"} {
			h, err := Hash(m, pw)
			if err != nil {
				t.Fatal(err)
			}
			if MethodOf(h) != m {
				t.Errorf("MethodOf(%s) = %s, want %s", h, MethodOf(h), m)
			}
			// crypt(password, hash) == hash when the password is right.
			cmd := exec.Command("perl", "-e", `print crypt($ARGV[0], $ARGV[1])`, pw, h)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("perl crypt: %v", err)
			}
			if string(out) != h {
				t.Errorf("%s of %q: we made %s, crypt(3) says %s", m, pw, h, out)
			}
			wrong, _ := exec.Command("perl", "-e", `print crypt($ARGV[0], $ARGV[1])`, pw+"!", h).Output()
			if string(wrong) == h {
				t.Errorf("%s: a wrong password matches %s", m, h)
			}
			if m == SHA512 {
				salt := strings.Split(h, "$")[2]
				o, err := exec.Command("openssl", "passwd", "-6", "-salt", salt, pw).Output()
				if err == nil && strings.TrimSpace(string(o)) != h {
					t.Errorf("openssl passwd -6 -salt %s = %s, we made %s", salt, o, h)
				}
			}
		}
	}
	h1, _ := Hash(Yescrypt, "same")
	h2, _ := Hash(Yescrypt, "same")
	if h1 == h2 {
		t.Error("two hashes of one password share a salt")
	}
}
