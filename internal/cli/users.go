package cli

import (
	"fmt"

	"github.com/imgbake/imgbake/image"
	"github.com/imgbake/imgbake/internal/config"
)

// sshAccounts checks each job's SSH user against the base image: the user
// must exist (unless cloud-init creates users at first boot) and its
// authorized_keys get the user's own uid and gid, unless the cluster file
// gives them.
func sshAccounts(c *config.Cluster, jobs []job, users map[string]image.Account, cloudInit bool) error {
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
			uid := acct.UID
			n.SSH.UID = &uid
		}
		if n.SSH.GID == nil && c.SSH.GID == nil {
			gid := acct.GID
			n.SSH.GID = &gid
		}
	}
	return nil
}
