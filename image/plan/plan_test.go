package plan

import (
	"encoding/json"
	"testing"
)

func TestPartJSON(t *testing.T) {
	b, err := json.Marshal(OS{CmdlinePart: Boot})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		CmdlinePart string `json:"cmdline_part"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.CmdlinePart != "boot" {
		t.Fatalf("cmdline_part = %q in %s, want \"boot\"", got.CmdlinePart, b)
	}
	var back OS
	if err := json.Unmarshal(b, &back); err != nil || back.CmdlinePart != Boot {
		t.Fatalf("round trip: %v, %v", back.CmdlinePart, err)
	}
	var p Part
	if err := p.UnmarshalText([]byte("swap")); err == nil {
		t.Fatal("UnmarshalText accepted \"swap\"")
	}
}
