package k3s

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ChannelURL is k3s's release channel server: <ChannelURL>/stable answers
// with a redirect to the release page of the current stable tag.
const ChannelURL = "https://update.k3s.io/v1-release/channels"

// DefaultVersion is the k3s release `imgbake init` pins when the channel
// server cannot be reached. Keep it a patch release of a supported minor
// (see minors).
const DefaultVersion = "v1.36.4+k3s1"

var tagRE = regexp.MustCompile(`^v([0-9]+)\.([0-9]+)\.([0-9]+)(-rc[0-9]+)?\+k3s[0-9]+$`)

// Minor returns the major and minor version of a release tag such as
// v1.36.4+k3s1 (1, 36).
func Minor(tag string) (major, minor int, ok bool) {
	m := tagRE.FindStringSubmatch(tag)
	if m == nil {
		return 0, 0, false
	}
	major, _ = strconv.Atoi(m[1])
	minor, _ = strconv.Atoi(m[2])
	return major, minor, true
}

// ChannelVersion asks the channel server at base (ChannelURL, or a test
// server) for the tag of channel ("stable", "latest"). The server answers
// with a redirect whose last path element is the tag; the redirect is not
// followed. ctx bounds the request (the caller gives a short timeout).
func ChannelVersion(ctx context.Context, client *http.Client, base, channel string) (string, error) {
	if client == nil {
		client = http.DefaultClient
	}
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	u := strings.TrimRight(base, "/") + "/" + channel
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("asking the k3s %s channel: %w", channel, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("asking the k3s %s channel: %w", channel, err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode < 300 || resp.StatusCode > 399 || loc == "" {
		return "", fmt.Errorf("asking the k3s %s channel: GET %s: %s, not a redirect to a release", channel, u, resp.Status)
	}
	lu, err := url.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("asking the k3s %s channel: bad redirect %q", channel, loc)
	}
	tag := path.Base(lu.Path)
	if t, err := url.PathUnescape(tag); err == nil {
		tag = t
	}
	if !tagRE.MatchString(tag) {
		return "", fmt.Errorf("asking the k3s %s channel: the redirect %q names no k3s release tag", channel, loc)
	}
	return tag, nil
}

// minorSupport is when a k3s minor version goes out of support. k3s
// follows the upstream Kubernetes patch release schedule
// (https://kubernetes.io/releases/<minor>: "End Of Life Date"); k3s
// publishes patch releases of a minor until then. Maintained by hand: add the
// new minor when Kubernetes publishes its schedule, and move DefaultVersion
// to a patch release of the newest one.
var minors = []struct {
	minor int
	eol   string
}{
	{31, "2025-10-28"},
	{32, "2026-02-28"},
	{33, "2026-06-28"},
	{34, "2026-10-27"},
	{35, "2027-02-28"},
	{36, "2027-06-28"},
}

// SupportWarning returns a warning when tag's minor version is out of
// support at now (or older than any imgbake knows), and "" when it is
// supported or newer than the table.
func SupportWarning(tag string, now time.Time) string {
	major, minor, ok := Minor(tag)
	if !ok || major != 1 {
		return ""
	}
	oldest := minors[0].minor
	newest := minors[len(minors)-1].minor
	if minor < oldest {
		return fmt.Sprintf("k3s %s is long out of support (1.%d and older get no fixes, security ones included); pin a current release such as %s in k3s.version", tag, oldest-1, DefaultVersion)
	}
	for _, m := range minors {
		if m.minor != minor {
			continue
		}
		eol, err := time.Parse(time.DateOnly, m.eol)
		if err != nil || now.Before(eol.AddDate(0, 0, 1)) {
			return ""
		}
		return fmt.Sprintf("k3s %s is out of support: 1.%d reached its end of life on %s and gets no fixes, security ones included; pin a newer release in k3s.version (1.%d is current, e.g. %s)", tag, minor, m.eol, newest, DefaultVersion)
	}
	return ""
}

// NeedsCgroupV2 reports whether the kubelet of k3s tag refuses to start on
// a cgroup v1 host: Kubernetes 1.35 and later (failCgroupV1 defaults to
// true, KEP-5573).
func NeedsCgroupV2(tag string) bool {
	major, minor, ok := Minor(tag)
	return ok && (major > 1 || minor >= 35)
}

// LastCgroupV1Minor is the newest k3s minor version whose kubelet still runs
// on cgroup v1.
const LastCgroupV1Minor = "1.34"
