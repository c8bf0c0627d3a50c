// Package netpoll tells which sockets have something to read, so a process
// holding many mostly idle sockets keeps no goroutine blocked on each: a
// socket is read only once the kernel says it is readable.
package netpoll

import (
	"errors"
	"net"
	"syscall"
)

// Handler is told that its socket is readable (or hung up). Ready runs on the
// poller's goroutine and must not block: read inline if it is quick, or hand
// the socket to a goroutine.
type Handler interface {
	Ready()
}

// ErrUnsupported is returned by New where there is no epoll.
var ErrUnsupported = errors.New("netpoll: not supported on this platform")

// FD is c's file descriptor. It stays owned by c: close c, never the
// descriptor, and remove it from the poller first.
func FD(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errors.New("netpoll: connection has no file descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}
