package image

import (
	"os"
	"syscall"
)

// identityOf returns what identifies fi's file and its content version:
// device, inode, size, and the change and modification times to the
// nanosecond. ok is false where the platform does not tell.
func identityOf(fi os.FileInfo) (id fileIdentity, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileIdentity{}, false
	}
	return fileIdentity{
		Dev: uint64(st.Dev), Ino: uint64(st.Ino), Size: st.Size,
		MtimeNs: syscall.TimespecToNsec(st.Mtim), CtimeNs: syscall.TimespecToNsec(st.Ctim),
	}, true
}
