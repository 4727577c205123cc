package firstboot

import (
	"bytes"
	"fmt"
	"net/netip"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzEditUserData edits a user-data seed from a base image (untrusted
// text) as a build does. When the seed is a #cloud-config YAML mapping,
// the result is either left unchanged or a mapping too, with hostname and
// preserve_hostname set and every other key as it was; anything else is
// left unchanged.
func FuzzEditUserData(f *testing.F) {
	for _, s := range []string{
		"#cloud-config\nhostname: raspberrypi\nmanage_etc_hosts: true\n",
		"#cloud-config\nusers:\n  - name: pi\n    groups: sudo\nhostname: x\nfqdn: x.lan\n",
		"#cloud-config\nhostname: |\n  multi\n  line\nruncmd: [ls]\n",
		"#!/bin/sh\necho hi\n",
		"#cloud-config\n# comment\npreserve_hostname: true\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, old []byte) {
		out := editUserData(old, "k5")
		if len(bytes.TrimSpace(old)) == 0 {
			if !bytes.HasPrefix(out, []byte("#cloud-config\nhostname: k5\n")) {
				t.Fatalf("empty user-data gave %q", out)
			}
			return
		}
		if len(bytes.TrimSpace(old)) > 0 && !bytes.HasPrefix(old, []byte("#cloud-config")) {
			if !bytes.Equal(out, old) {
				t.Fatalf("non-cloud-config user-data changed")
			}
			return
		}
		var root any
		if err := yaml.Unmarshal(old, &root); err != nil {
			return // not YAML to begin with
		}
		_, isMap := root.(map[string]any)
		if _, ok := root.(map[any]any); ok {
			isMap = true
		}
		if bytes.Equal(out, old) {
			return // left alone: never a damaged edit
		}
		if root != nil && !isMap {
			if !bytes.Equal(out, old) {
				t.Fatalf("user-data that is no mapping changed:\n--- in\n%s\n--- out\n%s", old, out)
			}
			return
		}
		var before, after map[any]any
		yaml.Unmarshal(old, &before)
		if err := yaml.Unmarshal(out, &after); err != nil {
			t.Fatalf("edited user-data is no longer YAML: %v\n--- in\n%q\n--- out\n%q", err, old, out)
		}
		if after["hostname"] != "k5" || after["preserve_hostname"] != false {
			t.Fatalf("hostname %v, preserve_hostname %v\n--- in\n%s\n--- out\n%s", after["hostname"], after["preserve_hostname"], old, out)
		}
		for k, v := range before {
			if k == "hostname" || k == "preserve_hostname" || k == "fqdn" {
				continue
			}
			if !reflect.DeepEqual(after[k], v) {
				t.Fatalf("key %q changed: %v -> %v\n--- in\n%s\n--- out\n%s", k, v, after[k], old, out)
			}
		}
	})
}

// FuzzEditNetworkConfig edits a network-config seed (untrusted YAML) as a
// build with a static address does: it is refused with an error, or the
// result is YAML of network version 2 holding imgbake's wired interface and
// every Wi-Fi network the seed had.
func FuzzEditNetworkConfig(f *testing.F) {
	for _, s := range []string{
		"version: 2\nethernets:\n  eth0:\n    dhcp4: true\n",
		"network:\n  version: 2\n  wifis:\n    wlan0:\n      access-points:\n        home: {password: x}\n",
		"network: {version: 1, config: []}\n",
		"version: 2\nwifis: {wlan0: {dhcp4: true}}\n",
		"",
	} {
		f.Add([]byte(s))
	}
	st := &static{addr: netip.MustParsePrefix("192.168.1.15/24"), gateway: "192.168.1.1", dns: []string{"192.168.1.1"}}
	f.Fuzz(func(t *testing.T, old []byte) {
		out, err := editNetworkConfig(old, st)
		if err != nil {
			return
		}
		var doc map[string]any
		if err := yaml.Unmarshal(out, &doc); err != nil {
			t.Fatalf("edited network-config is not YAML: %v\n%s", err, out)
		}
		net := doc
		if inner, ok := doc["network"].(map[string]any); ok {
			net = inner
		}
		if fmt.Sprint(net["version"]) != "2" {
			t.Fatalf("version %v\n%s", net["version"], out)
		}
		eth, _ := net["ethernets"].(map[string]any)
		if _, ok := eth["imgbake-wired"]; !ok {
			t.Fatalf("no imgbake-wired interface\n%s", out)
		}
		var before map[string]any
		if yaml.Unmarshal(old, &before) == nil {
			bnet := before
			if inner, ok := before["network"].(map[string]any); ok {
				bnet = inner
			}
			if w, ok := bnet["wifis"]; ok && !reflect.DeepEqual(net["wifis"], w) {
				t.Fatalf("wifis changed: %v -> %v", w, net["wifis"])
			}
		}
	})
}
