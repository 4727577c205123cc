package cli

import (
	"testing"
	"time"

	"github.com/imgbake/imgbake/image"
	"github.com/imgbake/imgbake/internal/fixture"
)

func TestDefaultEpoch(t *testing.T) {
	fixture.RequireTools(t)
	img := fixture.Cached(t, fixture.RaspiOSBookwormArm64)
	info, err := image.Inspect(img)
	if err != nil {
		t.Fatal(err)
	}
	e1, e2 := image.NewestFileTime(img, info), image.NewestFileTime(img, info)
	if !e1.Equal(e2) || e1.Unix() <= 0 || e1.After(time.Now()) {
		t.Errorf("NewestFileTime = %v, %v", e1, e2)
	}
	a := &App{Env: func(k string) string { return map[string]string{"SOURCE_DATE_EPOCH": "1700000000"}[k] }}
	if e, err := a.sourceDateEpoch(); err != nil || e.Unix() != 1700000000 {
		t.Errorf("SOURCE_DATE_EPOCH: %v %v", e, err)
	}
	a.Env = func(string) string { return "yesterday" }
	if _, err := a.sourceDateEpoch(); err == nil {
		t.Error("bad SOURCE_DATE_EPOCH accepted")
	}
}
