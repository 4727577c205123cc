package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong in a YAML file, located by file, line and field.
type Problem struct {
	File  string
	Line  int
	Field string // nodes[2].labels, "" for the document
	Msg   string
}

func (p Problem) String() string {
	loc := p.File
	if p.Line > 0 {
		loc = fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	if p.Field == "" {
		return loc + ": " + p.Msg
	}
	return loc + ": " + p.Field + ": " + p.Msg
}

// Problems is every problem found in a file, in file order. It is the error
// Load and LoadProfile return when a file is valid YAML but not a valid
// imgbake file.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Doc is a YAML document being decoded and validated: it remembers the line
// of every field so that problems found later still name file:line.
type Doc struct {
	File     string
	lines    map[string]int
	problems Problems
}

// NewDoc starts decoding a document read from file.
func NewDoc(file string) *Doc {
	return &Doc{File: file, lines: map[string]int{}}
}

// Errorf records a problem with field (a path such as nodes[1].name).
func (d *Doc) Errorf(field, format string, args ...any) {
	d.problems = append(d.problems, Problem{File: d.File, Line: d.Line(field), Field: field, Msg: fmt.Sprintf(format, args...)})
}

// Line returns the line field was found on, or the line of its nearest
// parent, or 0.
func (d *Doc) Line(field string) int {
	for f := field; ; {
		if l, ok := d.lines[f]; ok {
			return l
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			return d.lines[""]
		}
		f = f[:i]
	}
}

// Has reports whether field was present in the document.
func (d *Doc) Has(field string) bool {
	_, ok := d.lines[field]
	return ok
}

// Err returns the problems recorded so far, sorted by line, or nil.
func (d *Doc) Err() error {
	if len(d.problems) == 0 {
		return nil
	}
	ps := append(Problems(nil), d.problems...)
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
	return ps
}

// ParseFile reads path and decodes it into v (a pointer to a struct with yaml
// tags) with Decode.
func ParseFile(path string, v any) (*Doc, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	d := NewDoc(path)
	if err := d.Decode(data, v); err != nil {
		return nil, err
	}
	return d, nil
}

// Decode parses data and fills v, a pointer to a struct with yaml tags.
// Unlike yaml.Unmarshal it rejects unknown and duplicate fields (with a
// did-you-mean), and remembers the line of every field. Syntax errors are
// returned at once; shape problems are recorded on d (see Err).
func (d *Doc) Decode(data []byte, v any) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return fmt.Errorf("%s: %w", d.File, err)
	}
	if root.Kind == 0 { // empty file
		return nil
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) != 1 {
		return fmt.Errorf("%s: expected one YAML document", d.File)
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return errors.New("config: Decode needs a pointer to a struct")
	}
	d.decode(root.Content[0], rv.Elem(), "")
	return nil
}

func (d *Doc) decode(n *yaml.Node, v reflect.Value, field string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	d.lines[field] = n.Line
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // leave the zero value
	}
	switch v.Kind() {
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		d.decode(n, p.Elem(), field)
		v.Set(p)
	case reflect.Struct:
		d.decodeStruct(n, v, field)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.Errorf(field, "expected a list (- item), found %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", field, i))
		}
		v.Set(s)
	case reflect.Map:
		d.decodeMap(n, v, field)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.Errorf(field, "expected a single value, found %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Interface:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!int" && len(n.Value) > 1 && n.Value[0] == '0' {
			// yaml.v3 reads 0644 as octal 420; keep the text as written
			// (k3s reads write-kubeconfig-mode: 0644 as octal itself).
			v.Set(reflect.ValueOf(n.Value))
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.Errorf(field, "%s", cleanYAMLError(err))
		}
	default: // bool, ints
		if n.Kind != yaml.ScalarNode {
			d.Errorf(field, "expected a single value, found %s", kindName(n))
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.Errorf(field, "%s", cleanYAMLError(err))
		}
	}
}

func (d *Doc) decodeStruct(n *yaml.Node, v reflect.Value, field string) {
	if n.Kind != yaml.MappingNode {
		d.Errorf(field, "expected fields (key: value), found %s", kindName(n))
		return
	}
	t := v.Type()
	byName := map[string]int{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		byName[tag] = i
		names = append(names, tag)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		sub := join(field, k.Value)
		idx, ok := byName[k.Value]
		if !ok {
			d.lines[sub] = k.Line
			msg := fmt.Sprintf("unknown field %q", k.Value)
			if s := suggest(k.Value, names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			} else {
				msg += " (known: " + strings.Join(names, ", ") + ")"
			}
			d.Errorf(sub, "%s", msg)
			continue
		}
		if seen[k.Value] {
			d.lines[sub] = k.Line
			d.Errorf(sub, "field given twice")
			continue
		}
		seen[k.Value] = true
		d.decode(val, v.Field(idx), sub)
		d.lines[sub] = k.Line
	}
}

func (d *Doc) decodeMap(n *yaml.Node, v reflect.Value, field string) {
	if n.Kind != yaml.MappingNode {
		d.Errorf(field, "expected key: value pairs, found %s", kindName(n))
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		sub := join(field, k.Value)
		d.lines[sub] = k.Line
		if k.Kind != yaml.ScalarNode {
			d.Errorf(sub, "keys must be plain strings")
			continue
		}
		if m.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
			d.Errorf(sub, "key given twice")
			continue
		}
		ev := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, ev, sub)
		d.lines[sub] = k.Line
		m.SetMapIndex(reflect.ValueOf(k.Value), ev)
	}
	v.Set(m)
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "fields (key: value)"
	case yaml.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("%q", n.Value)
}

func cleanYAMLError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: unmarshal errors:\n")
	s = strings.TrimSpace(s)
	if i := strings.Index(s, ": "); strings.HasPrefix(s, "line ") && i > 0 {
		s = s[i+2:]
	}
	return s
}

// Suggest returns the name closest to s when it is close enough to be a
// likely typo, else "".
func Suggest(s string, names []string) string { return suggest(s, names) }

// Fresh returns an empty Doc for the same file that knows the lines d
// read, to record problems found after d was checked.
func (d *Doc) Fresh() *Doc { return &Doc{File: d.File, lines: d.lines} }

func suggest(s string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if d := distance(strings.ToLower(s), n); d < bestD {
			best, bestD = n, d
		}
	}
	if best == "" {
		for _, n := range names {
			if strings.Contains(n, strings.ToLower(s)) || strings.Contains(strings.ToLower(s), n) {
				return n
			}
		}
	}
	return best
}

// distance is the Levenshtein edit distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
