package telemetry

import "golang.org/x/sys/unix"

// terminalFd reports whether fd is a terminal: only a terminal answers the
// termios request.
func terminalFd(fd uintptr) bool {
	_, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
	return err == nil
}
