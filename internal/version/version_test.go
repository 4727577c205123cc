package version

import (
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	if s := String(); !strings.HasPrefix(s, "dev ") && !strings.HasPrefix(s, "v") {
		t.Errorf("String() = %q, want dev or a v-tag", s)
	}
}
