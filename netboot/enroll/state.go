package enroll

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/imgbake/imgbake/internal/tempfile"
)

// DefaultFile is the enrolled-nodes file's name, next to the cluster file.
const DefaultFile = "imgbake.enrolled.yaml"

// Record is one enrolled Pi: from its enrollment on, an ordinary node of
// the cluster.
type Record struct {
	Name    string `yaml:"name" json:"name"`
	Profile string `yaml:"profile" json:"profile"`
	Model   string `yaml:"model,omitempty" json:"model,omitempty"`
	// Serial and MAC are what the Pi's DHCP request said when it was
	// enrolled; the node boots from them only.
	Serial string `yaml:"serial,omitempty" json:"serial,omitempty"`
	MAC    string `yaml:"mac" json:"mac"`
	// Revision is the board revision code (hex) from option 97.
	Revision string    `yaml:"revision,omitempty" json:"revision,omitempty"`
	Enrolled time.Time `yaml:"enrolled" json:"enrolled"`
	// By says how: "auto" (mode: auto) or "approve".
	By string `yaml:"by" json:"by"`
}

// State is the enrolled-nodes file.
type State struct {
	// Next is the next {n} of the naming pattern; it only grows.
	Next int `yaml:"next"`
	// Retired are names of removed nodes: never given again.
	Retired []string `yaml:"retired,omitempty"`
	Nodes   []Record `yaml:"nodes"`
}

// Find returns the record named name.
func (s *State) Find(name string) (*Record, bool) {
	for i := range s.Nodes {
		if s.Nodes[i].Name == name {
			return &s.Nodes[i], true
		}
	}
	return nil, false
}

// Used reports whether name was ever given to an enrolled node.
func (s *State) Used(name string) bool {
	_, ok := s.Find(name)
	return ok || slices.Contains(s.Retired, name)
}

// Store reads and writes the enrolled-nodes file. Writers (the server
// enrolling a Pi, `imgbake netboot approve`) take an exclusive lock on
// Path+".lock" and replace the file atomically: a temporary file in the
// same directory, fsynced, renamed over it, and the directory fsynced. A
// crash or a full disk leaves the old file or the new one, never a mix.
type Store struct {
	// Path is the file, e.g. imgbake.enrolled.yaml next to the cluster file.
	Path string
}

// Load reads the file; a missing file is an empty State.
func (s *Store) Load() (*State, error) {
	// Copies a killed imgbake was writing (the file, or another beside it).
	tempfile.RemoveStale(filepath.Dir(s.Path), nil)
	data, err := os.ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Next: 1}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading enrolled nodes: %w", err)
	}
	return parse(s.Path, data)
}

func parse(path string, data []byte) (*State, error) {
	st := &State{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(st); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading enrolled nodes from %s: %w (imgbake writes this file; restore it from version control or a backup)", path, err)
	}
	if st.Next < 1 {
		st.Next = 1
	}
	seen := map[string]bool{}
	for _, r := range st.Nodes {
		if r.Name == "" || r.Profile == "" || r.MAC == "" {
			return nil, fmt.Errorf("reading enrolled nodes from %s: a node lacks name, profile or mac", path)
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("reading enrolled nodes from %s: %s is enrolled twice", path, r.Name)
		}
		seen[r.Name] = true
	}
	return st, nil
}

// Modified returns the file's modification time and size (zero when it
// does not exist), for noticing changes.
func (s *Store) Modified() (time.Time, int64) {
	fi, err := os.Stat(s.Path)
	if err != nil {
		return time.Time{}, 0
	}
	return fi.ModTime(), fi.Size()
}

// Update runs fn on the current state under the lock and, when fn returns
// nil, writes the result. Nothing is written when fn fails.
func (s *Store) Update(fn func(*State) error) error {
	unlock, err := lockFile(s.Path + ".lock")
	if err != nil {
		return err
	}
	defer unlock()
	st, err := s.Load()
	if err != nil {
		return err
	}
	if err := fn(st); err != nil {
		return err
	}
	return s.write(st)
}

const header = `# Written by imgbake: the Pis enrolled by the enroll: policy of the cluster
# file. Each is an ordinary node (imgbake build NAME, imgbake netboot reset
# NAME). Commit it with the cluster file; change it only with imgbake
# (imgbake netboot approve), as imgbake netboot rewrites it.
`

func (s *Store) write(st *State) error {
	body, err := yaml.Marshal(st)
	if err != nil {
		return fmt.Errorf("writing enrolled nodes: %w", err)
	}
	return tempfile.WriteFile(s.Path, append([]byte(header), body...), 0o644)
}

// lockFile takes an exclusive flock on path (created if needed).
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
