package config

import (
	"strings"
	"testing"
)

func TestEnrollPolicy(t *testing.T) {
	base := "server: 10.0.0.1\nk3s: {version: v1.31.4+k3s1}\nnodes:\n  - {name: k1, profile: server, netboot: {serial: 1234abcd, mac: \"dc:a6:32:00:00:01\"}}\n"
	c, err := Load(writeFile(t, "imgbake.yaml", base+"enroll: {mode: approve, profile: worker, models: [Pi4B, pi5], max-nodes: 8}\n", 0o644))
	if err != nil {
		t.Fatal(err)
	}
	if c.Enroll.Models[0] != "pi4" || c.Enroll.EnrollName() != "worker-{n}" || c.Enroll.MaxNodes != 8 {
		t.Errorf("enroll %+v", c.Enroll)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"enroll: {profile: worker}", "enroll.mode: missing"},
		{"enroll: {mode: yes, profile: worker}", `enroll.mode: "yes": use approve or auto`},
		{"enroll: {mode: auto}", "enroll.profile: missing"},
		{"enroll: {mode: auto, profile: worker, name: worker}", "every node would get the same name"},
		{"enroll: {mode: auto, profile: worker, name: \"W_{n}\"}", "enroll.name"},
		{"enroll: {mode: auto, profile: worker, name: \"w{id}\"}", "unknown {id}"},
		{"enroll: {mode: auto, profile: worker, models: [pi0w]}", "ARMv6"},
		{"enroll: {mode: auto, profile: worker, models: [pi9]}", "unknown model"},
		{"enroll: {mode: auto, profile: worker, max-nodes: -1}", "max-nodes"},
		{"enroll: {mode: auto, profile: worker, nmae: x}", "nmae"},
	} {
		_, err := Load(writeFile(t, "imgbake.yaml", base+tc.yaml+"\n", 0o644))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

func TestAddEnrolled(t *testing.T) {
	c := &Cluster{File: "imgbake.yaml", Nodes: []Node{{Name: "k1", Profile: "server", Netboot: &Netboot{Serial: "1234abcd", MAC: "dc:a6:32:00:00:01"}}}}
	skipped := c.AddEnrolled([]Node{
		{Name: "worker-1", Profile: "worker", Netboot: &Netboot{Serial: "10000001", MAC: "dc:a6:32:00:00:11"}},
		{Name: "k1", Profile: "worker", Netboot: &Netboot{Serial: "10000002", MAC: "dc:a6:32:00:00:12"}},
		{Name: "worker-3", Profile: "worker", Netboot: &Netboot{Serial: "1234abcd", MAC: "DC:A6:32:00:00:01"}},
		{Name: "k1", Profile: "worker", Netboot: &Netboot{MAC: "dc:a6:32:00:00:01"}},
	})
	if len(c.Nodes) != 2 || c.Nodes[1].Name != "worker-1" {
		t.Errorf("nodes %+v", c.Nodes)
	}
	if len(skipped) != 2 || !strings.Contains(skipped[0], "has the name of a node") || !strings.Contains(skipped[1], "is the Pi of node k1") {
		t.Errorf("skipped %q", skipped)
	}
}
