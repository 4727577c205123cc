package image

import (
	"testing"

	"github.com/imgbake/imgbake/internal/fixture"
)

func TestAccounts(t *testing.T) {
	fixture.RequireTools(t)
	img := fixture.Cached(t, fixture.RaspiOSBookwormArm64)
	info, err := Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	users, err := Accounts(img, info)
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := users["root"]; !ok || a.UID != 0 || a.GID != 0 {
		t.Errorf("root: %+v %v in %v", a, ok, users)
	}
	info.RootPartition = 9
	if _, err := Accounts(img, info); err == nil {
		t.Error("Accounts without a root partition: no error")
	}
}

func TestParsePasswd(t *testing.T) {
	got := parsePasswd("root:x:0:0:root:/root:/bin/bash\npi:x:1000:1001::/home/pi:/bin/bash\nbroken:x:a:0\nshort:x\n")
	if len(got) != 2 || got["pi"] != (Account{1000, 1001}) || got["root"] != (Account{0, 0}) {
		t.Errorf("parsePasswd = %v", got)
	}
}
