package flash

import (
	"encoding/xml"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// This file turns macOS `diskutil info -plist` and `diskutil list -plist`
// output into Devices. It has no build tag so that it is tested on every
// platform; device_darwin.go runs diskutil.

// parsePlist decodes an XML property list into map[string]any, []any,
// string, int64, float64 and bool values.
func parsePlist(data []byte) (any, error) {
	d := xml.NewDecoder(strings.NewReader(string(data)))
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, fmt.Errorf("parsing plist: %w", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local != "plist" {
			return plistValue(d, se)
		}
	}
}

func plistValue(d *xml.Decoder, se xml.StartElement) (any, error) {
	switch se.Name.Local {
	case "dict":
		m := map[string]any{}
		key := ""
		for {
			tok, err := d.Token()
			if err != nil {
				return nil, fmt.Errorf("parsing plist dict: %w", err)
			}
			switch t := tok.(type) {
			case xml.EndElement:
				return m, nil
			case xml.StartElement:
				if t.Name.Local == "key" {
					var k string
					if err := d.DecodeElement(&k, &t); err != nil {
						return nil, err
					}
					key = k
					continue
				}
				v, err := plistValue(d, t)
				if err != nil {
					return nil, err
				}
				m[key] = v
			}
		}
	case "array":
		var a []any
		for {
			tok, err := d.Token()
			if err != nil {
				return nil, fmt.Errorf("parsing plist array: %w", err)
			}
			switch t := tok.(type) {
			case xml.EndElement:
				return a, nil
			case xml.StartElement:
				v, err := plistValue(d, t)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
		}
	case "true", "false":
		if err := d.Skip(); err != nil {
			return nil, err
		}
		return se.Name.Local == "true", nil
	}
	var text string
	if err := d.DecodeElement(&text, &se); err != nil {
		return nil, err
	}
	switch se.Name.Local {
	case "integer":
		return strconv.ParseInt(strings.TrimSpace(text), 10, 64)
	case "real":
		return strconv.ParseFloat(strings.TrimSpace(text), 64)
	}
	return text, nil // string, date, data
}

func plistDict(v any) map[string]any { m, _ := v.(map[string]any); return m }
func plistStr(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}
func plistBool(m map[string]any, k string) bool {
	b, _ := m[k].(bool)
	return b
}
func plistInt(m map[string]any, k string) int64 {
	n, _ := m[k].(int64)
	return n
}

var wholeDiskRE = regexp.MustCompile(`^disk[0-9]+`)

// darwinWholeDisk returns the whole disk of a disk identifier or node:
// disk4 for /dev/rdisk4s1.
func darwinWholeDisk(id string) string {
	id = strings.TrimPrefix(strings.TrimPrefix(id, "/dev/"), "r")
	return wholeDiskRE.FindString(id)
}

// darwinSystemDisks returns the physical whole disks that hold the volume
// described by `diskutil info -plist /`: its parent disk and, for APFS,
// the disks of the container's physical stores.
func darwinSystemDisks(rootInfo map[string]any) []string {
	var out []string
	if d := darwinWholeDisk(plistStr(rootInfo, "ParentWholeDisk")); d != "" {
		out = append(out, d)
	}
	stores, _ := rootInfo["APFSPhysicalStores"].([]any)
	for _, s := range stores {
		if d := darwinWholeDisk(plistStr(plistDict(s), "APFSPhysicalStore")); d != "" {
			out = append(out, d)
		}
	}
	return out
}

// darwinDevice builds a Device from `diskutil info -plist diskN` and
// `diskutil list -plist diskN` of a whole disk; systemDisks are the disks
// the running system is on.
func darwinDevice(info, list map[string]any, systemDisks []string) (*Device, error) {
	id := plistStr(info, "DeviceIdentifier")
	if id == "" {
		return nil, fmt.Errorf("diskutil gave no DeviceIdentifier")
	}
	if !plistBool(info, "WholeDisk") {
		return nil, fmt.Errorf("/dev/%s is a partition: give the whole disk, /dev/%s", id, darwinWholeDisk(id))
	}
	d := &Device{Path: "/dev/r" + id, Name: id}
	d.Size = plistInt(info, "TotalSize")
	if d.Size == 0 {
		d.Size = plistInt(info, "Size")
	}
	d.Model = strings.TrimSpace(plistStr(info, "MediaName"))
	if d.Model == "" {
		d.Model = strings.TrimSpace(plistStr(info, "IORegistryEntryName"))
	}
	switch bus := plistStr(info, "BusProtocol"); bus {
	case "USB":
		d.Bus = "usb"
	case "Secure Digital":
		d.Bus = "sd"
	}
	d.Removable = plistBool(info, "RemovableMedia") || plistBool(info, "Removable") ||
		plistBool(info, "Ejectable") || (!plistBool(info, "Internal") && d.Bus != "")
	if w, ok := info["WritableMedia"].(bool); ok && !w {
		d.ReadOnly = true
	}
	for _, sys := range systemDisks {
		if sys == id {
			d.System = "the running system's volume is on " + id
		}
	}
	for _, e := range listEntries(list) {
		if mp := plistStr(e, "MountPoint"); mp != "" && darwinWholeDisk(plistStr(e, "DeviceIdentifier")) == id {
			d.Mounts = append(d.Mounts, Mount{Device: "/dev/" + plistStr(e, "DeviceIdentifier"), Point: mp})
		}
	}
	if len(d.Mounts) > 0 {
		d.UnmountHint = "diskutil unmountDisk /dev/" + id
	}
	return d, nil
}

// listEntries flattens the disks and partitions of `diskutil list -plist`.
func listEntries(list map[string]any) []map[string]any {
	var out []map[string]any
	all, _ := list["AllDisksAndPartitions"].([]any)
	for _, a := range all {
		disk := plistDict(a)
		out = append(out, disk)
		for _, k := range []string{"Partitions", "APFSVolumes"} {
			parts, _ := disk[k].([]any)
			for _, p := range parts {
				out = append(out, plistDict(p))
			}
		}
	}
	return out
}

// darwinWholeDisks returns the WholeDisks of `diskutil list -plist`.
func darwinWholeDisks(list map[string]any) []string {
	var out []string
	ws, _ := list["WholeDisks"].([]any)
	for _, w := range ws {
		if s, ok := w.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func readPlistDict(r io.Reader) (map[string]any, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	v, err := parsePlist(data)
	if err != nil {
		return nil, err
	}
	m := plistDict(v)
	if m == nil {
		return nil, fmt.Errorf("parsing plist: top level is not a dict")
	}
	return m, nil
}
