//go:build darwin || dragonfly || freebsd || netbsd || openbsd

package telemetry

import "golang.org/x/sys/unix"

// terminalFd reports whether fd is a terminal: only a terminal answers the
// termios request (TIOCGETA on the BSDs and macOS).
func terminalFd(fd uintptr) bool {
	_, err := unix.IoctlGetTermios(int(fd), unix.TIOCGETA)
	return err == nil
}
