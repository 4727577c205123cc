package firstboot

import (
	"testing"

	"github.com/imgbake/imgbake/internal/config"
	"github.com/imgbake/imgbake/profiles"
)

// TestPrivateProfileFilesAreSecret: a profile file only its owner may read
// (registries.yaml with registry credentials, a private key) is a Secret
// entry, so its checksum stays out of the manifest and logs; a world-readable
// one is not.
func TestPrivateProfileFilesAreSecret(t *testing.T) {
	worker := mustProfile(t, "worker")
	worker.Files = []profiles.File{
		{Path: "/etc/rancher/k3s/registries.yaml", Mode: "0600", Content: "configs:\n  registry.example.com:\n    auth: {username: u, password: hunter2}\n"},
		{Path: "/root/.ssh/id_ed25519", Mode: "0400", Owner: "root", Content: "-----BEGIN OPENSSH PRIVATE KEY-----\n"},
		{Path: "/usr/local/sbin/private-script", Mode: "0700", Content: "#!/bin/sh\n"},
		{Path: "/etc/motd", Content: "k3s node\n"},
		{Path: "/etc/example.conf", Mode: "0640", Content: "x\n"},
	}
	in := Input{OS: bookworm(), Cluster: cluster(), Profile: worker, Token: testToken, K3sBinary: "/cache/k3s-arm64",
		Node: config.Node{Name: "k5", Profile: "worker"}}
	p, err := Plan(in)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"/etc/rancher/k3s/registries.yaml": true, "/root/.ssh/id_ed25519": true, "/usr/local/sbin/private-script": true,
		"/etc/motd": false, "/etc/example.conf": false}
	for _, e := range p.Entries {
		if w, ok := want[e.Path]; ok {
			if e.Secret != w {
				t.Errorf("%s (mode %04o): Secret = %v, want %v", e.Path, e.Mode, e.Secret, w)
			}
			delete(want, e.Path)
		}
	}
	if len(want) > 0 {
		t.Errorf("not in the plan: %v", want)
	}
}
