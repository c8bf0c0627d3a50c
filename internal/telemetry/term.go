package telemetry

import (
	"io"
	"syscall"
)

// isTerminal reports whether w is a file open on a terminal. It reaches the
// descriptor through SyscallConn, which, unlike Fd, leaves the file's
// non-blocking mode alone.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return false
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	tty := false
	if err := rc.Control(func(fd uintptr) { tty = terminalFd(fd) }); err != nil {
		return false
	}
	return tty
}
