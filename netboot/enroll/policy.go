// Package enroll turns Raspberry Pis that are not in the cluster file into
// nodes, by the cluster's enroll: policy: which models are accepted, how
// many nodes, how they are named, and whether a human approves each one.
//
// Enrolled nodes are kept in a file imgbake owns (DefaultFile, next to the
// cluster file), written atomically under a lock, never in the user's
// hand-edited cluster file. Pis waiting for approval or refused are kept in
// the server's state directory (PendingFile).
package enroll

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/imgbake/imgbake/netboot"
)

// Mode is how unknown Pis are enrolled.
type Mode string

// Modes.
const (
	// ModeAuto enrols a Pi that matches the policy at its first DHCP request.
	// It hands a node image, and with it the cluster's join token, to any
	// device that answers like a Pi on the boot network.
	ModeAuto Mode = "auto"
	// ModeApprove lists a matching Pi as pending, serving it nothing, until
	// `imgbake netboot approve SERIAL` enrols it.
	ModeApprove Mode = "approve"
)

// Policy is the cluster file's enroll: section.
type Policy struct {
	Mode Mode
	// Profile is the enrolled nodes' profile.
	Profile string
	// Name is the naming pattern: {n} (a counter that never goes back),
	// {serial} (8 hex digits), {mac} (12 hex digits); e.g. worker-{n}.
	Name string
	// Models are the accepted models (imgbake's model names); empty
	// accepts every model that can run k3s. ARMv6 boards are always
	// refused.
	Models []string
	// MaxNodes is the most enrolled nodes there may be; 0 is no limit.
	MaxNodes int
	// CheckName checks a generated name (a host name); nil accepts any.
	CheckName func(string) error
}

var tokenRE = regexp.MustCompile(`\{[^}]*\}`)

// CheckPattern checks a naming pattern: known tokens only, at least one of
// them, so that names differ.
func CheckPattern(p string) error {
	toks := tokenRE.FindAllString(p, -1)
	if len(toks) == 0 {
		return fmt.Errorf("naming pattern %q has no {n}, {serial} or {mac}: every node would get the same name", p)
	}
	for _, t := range toks {
		if t != "{n}" && t != "{serial}" && t != "{mac}" {
			return fmt.Errorf("naming pattern %q: unknown %s; use {n}, {serial} or {mac}", p, t)
		}
	}
	return nil
}

// Machine is a Pi as its DHCP request shows it.
type Machine struct {
	MAC net.HardwareAddr
	// Serial is from option 97 (Pi 4/5); empty for a Pi 3B/3B+ ROM.
	Serial netboot.Serial
	// Revision is the board revision code from option 97; 0 when absent.
	Revision uint32
}

// Key identifies the machine in the pending list: its serial, else its MAC.
func (m Machine) Key() string {
	if m.Serial != "" {
		return string(m.Serial)
	}
	return m.MAC.String()
}

// model returns the machine's model and a refusal reason for boards that
// cannot run k3s.
func (m Machine) model() (string, error) {
	if m.Revision == 0 {
		// Only the Pi 3B/3B+ ROM network-boots without option 97.
		return "pi3", nil
	}
	b, err := DecodeRevision(m.Revision)
	if b.ARMv6 {
		return b.Model, fmt.Errorf("model %s (revision %#x) has an ARMv6 CPU, which k3s does not run on (as imgbake build refuses it)", cmpOr(b.Model, "unknown"), m.Revision)
	}
	if err != nil {
		return "", err
	}
	return b.Model, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// ErrRefused is wrapped by decisions that refuse a Pi: it does not match
// the policy. Such a Pi is logged, listed in pending as refused, and not
// answered.
var ErrRefused = errors.New("refused by the enroll policy")

// ErrPending is wrapped when a Pi waits for `imgbake netboot approve`.
var ErrPending = errors.New("waiting for approval")

// accept checks machine m against the policy (model, limit) for state st.
func (p *Policy) accept(st *State, m Machine) (model string, err error) {
	model, err = m.model()
	if err != nil {
		return model, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	if len(p.Models) > 0 && !slices.Contains(p.Models, model) {
		return model, fmt.Errorf("%w: model %s is not in enroll.models (%s)", ErrRefused, model, strings.Join(p.Models, ", "))
	}
	if p.MaxNodes > 0 && len(st.Nodes) >= p.MaxNodes {
		return model, fmt.Errorf("%w: enroll.max-nodes %d reached", ErrRefused, p.MaxNodes)
	}
	return model, nil
}

// name returns the name the pattern gives m, advancing st.Next for {n}.
// taken reports names in use elsewhere (the cluster file's nodes). A name
// is never one that was given before.
func (p *Policy) name(st *State, m Machine, taken func(string) bool) (string, error) {
	if strings.Contains(p.Name, "{serial}") && m.Serial == "" {
		return "", fmt.Errorf("%w: the naming pattern %q needs a serial, and this Pi (a Pi 3B/3B+ ROM) sends none; use {mac} or {n}", ErrRefused, p.Name)
	}
	hasN := strings.Contains(p.Name, "{n}")
	for tries := 0; tries < 10000; tries++ {
		r := strings.NewReplacer("{n}", strconv.Itoa(st.Next), "{serial}", string(m.Serial),
			"{mac}", strings.ReplaceAll(m.MAC.String(), ":", ""))
		name := r.Replace(p.Name)
		if hasN {
			st.Next++
		}
		if p.CheckName != nil {
			if err := p.CheckName(name); err != nil {
				return "", fmt.Errorf("%w: naming pattern %q gives %q: %v", ErrRefused, p.Name, name, err)
			}
		}
		if !st.Used(name) && (taken == nil || !taken(name)) {
			return name, nil
		}
		if !hasN {
			return "", fmt.Errorf("%w: the name %s is already taken (by a node of the cluster file, or one enrolled before)", ErrRefused, name)
		}
	}
	return "", fmt.Errorf("%w: no free name for pattern %q", ErrRefused, p.Name)
}

// CheckNewName checks a name chosen by hand (approve --name).
func (p *Policy) CheckNewName(st *State, name string, taken func(string) bool) error {
	if p.CheckName != nil {
		if err := p.CheckName(name); err != nil {
			return err
		}
	}
	if st.Used(name) {
		return fmt.Errorf("the name %s was already given to an enrolled node; names are never reused", name)
	}
	if taken != nil && taken(name) {
		return fmt.Errorf("the name %s is a node of the cluster file", name)
	}
	return nil
}

// match finds m's record. A record that matches one of serial and MAC but
// not the other is a conflict: one board posing as another, or a
// replaced network card; it is refused, never served another's disk.
func match(st *State, m Machine) (*Record, error) {
	for i := range st.Nodes {
		r := &st.Nodes[i]
		sameMAC := strings.EqualFold(r.MAC, m.MAC.String())
		sameSerial := m.Serial != "" && r.Serial == string(m.Serial)
		switch {
		case sameMAC && (sameSerial || r.Serial == "" || m.Serial == ""):
			return r, nil
		case sameSerial:
			return nil, fmt.Errorf("%w: serial %s is enrolled as %s with MAC %s, but this request comes from MAC %s: possible impersonation; not served (if %s's board really changed, remove it from %s and let it enrol again)",
				ErrRefused, m.Serial, r.Name, r.MAC, m.MAC, r.Name, DefaultFile)
		case sameMAC:
			return nil, fmt.Errorf("%w: MAC %s is enrolled as %s with serial %s, but this request says serial %s: possible impersonation; not served",
				ErrRefused, m.MAC, r.Name, r.Serial, m.Serial)
		}
	}
	return nil, nil
}

func parseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("%q is not a MAC address", s)
	}
	return mac, nil
}

func serialOf(s string) netboot.Serial {
	if s == "" {
		return ""
	}
	sr, err := netboot.ParseSerial(s)
	if err != nil {
		return ""
	}
	return sr
}
