package cli

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/imgbake/imgbake/image"
	"github.com/imgbake/imgbake/image/ext4"
	"github.com/imgbake/imgbake/internal/config"
)

// account is a user of the base image's /etc/passwd.
type account struct{ uid, gid int }

// baseAccounts reads the users of the base image's root filesystem.
func baseAccounts(base *image.Base, info *image.Info) (map[string]account, error) {
	f, err := os.Open(base.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, ok := info.Partition(info.RootPartition)
	if !ok {
		return nil, fmt.Errorf("no root partition")
	}
	fsys, err := ext4.Open(f, p.Start, p.Size, &ext4.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer fsys.Close()
	data, err := fsys.ReadFile("/etc/passwd")
	if err != nil {
		return nil, fmt.Errorf("reading /etc/passwd: %w", err)
	}
	return parsePasswd(string(data)), nil
}

func parsePasswd(s string) map[string]account {
	users := map[string]account{}
	for _, line := range strings.Split(s, "\n") {
		f := strings.Split(line, ":")
		if len(f) < 4 {
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 == nil && err2 == nil {
			users[f[0]] = account{uid, gid}
		}
	}
	return users
}

// sshAccounts checks each job's SSH user against the base image: the user
// must exist (unless cloud-init creates users at first boot) and its
// authorized_keys get the user's own uid and gid, unless the cluster file
// gives them.
func sshAccounts(c *config.Cluster, jobs []job, users map[string]account, cloudInit bool) error {
	for i := range jobs {
		n := &jobs[i].node
		if len(c.SSH.AuthorizedKeys)+len(n.SSH.AuthorizedKeys) == 0 {
			continue
		}
		user := firstNonEmpty(n.SSH.User, c.SSH.User, "root")
		if user == "root" || cloudInit {
			continue
		}
		if s := config.NodeSettings(c, *n, nil); s.User != nil && s.User.Name == user {
			continue // the login user: made at first boot, with these keys
		}
		field := "ssh.user"
		if n.SSH.User != "" {
			if _, idx, ok := c.Node(n.Name); ok {
				field = fmt.Sprintf("nodes[%d].ssh.user", idx)
			}
		}
		acct, ok := users[user]
		if !ok {
			return fmt.Errorf("%s:%d: %s: the base image has no user %q, so node %s could not be reached as %s: use user: root, or a user the image has", c.File, c.Line(field), field, user, n.Name, user)
		}
		if n.SSH.UID == nil && c.SSH.UID == nil {
			uid := acct.uid
			n.SSH.UID = &uid
		}
		if n.SSH.GID == nil && c.SSH.GID == nil {
			gid := acct.gid
			n.SSH.GID = &gid
		}
	}
	return nil
}
