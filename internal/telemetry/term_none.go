//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package telemetry

// terminalFd: elsewhere lines stay JSON.
func terminalFd(uintptr) bool { return false }
