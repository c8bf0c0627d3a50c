package testinfra

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Why FreeAddr does not let the kernel pick (listen on port 0): a test
// picks a port, closes it, and hands it to a server it starts — a
// collector, Prometheus, redis-server, a service — which binds it a few
// milliseconds to seconds later. The kernel takes the ports of outgoing
// connections (every client socket's local port) from the same range it
// picks port 0 from, net.ipv4.ip_local_port_range, so in between any
// connection of any process on the machine — and a test run opens tens of
// thousands: loadgen's sockets, the fault suite's reconnects — may take
// the picked port, and the server fails with "address already in use"
// (seen: the collector in obscheck). The same happens to a server stopped
// and started again on its port (the fault suite's Redis and broker
// restarts). So ports are picked at random below that range, where the
// kernel never allocates: only another test's pick can collide there, one
// process never hands out one twice, and a port found bound is skipped.

// pickFloor is the lowest port picked: below it sit ports that daemons
// are configured on by convention (redis 6379, Prometheus 9090, ...).
const pickFloor = 10000

// minPickable is the fewest ports below the kernel's range worth picking
// from; with fewer (a machine whose range starts low), the kernel picks.
const minPickable = 4096

// portRangeFile is where the kernel's range is read; tests replace it.
var portRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

// pick returns a port offset in [0, n); tests replace it to force one.
var pick = func(n int) int { return rand.IntN(n) }

// handedOut holds the ports this process has picked: a port a test has
// been given stays its own until the process ends, even when the server it
// was meant for has not bound it yet.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// freeAddr picks a loopback address as FreeAddr describes, or lets the
// kernel pick when its range leaves too little below it.
func freeAddr() (string, error) {
	if port, ok := pickBelowRange(0); ok {
		return "127.0.0.1:" + strconv.Itoa(port), nil
	}
	return listenable("127.0.0.1:0")
}

// pickBelowRange picks a port as FreeAddr does such that port+offset is
// free and below the kernel's range too (a redis cluster node's bus port is
// its port + 10000); ok is false when the range leaves too little below it,
// or nothing free was found.
func pickBelowRange(offset int) (port int, ok bool) {
	low, err := ephemeralLow()
	if err != nil || low-offset-pickFloor < minPickable {
		return 0, false
	}
	for range 200 {
		port := pickFloor + pick(low-offset-pickFloor)
		if free(port) && (offset == 0 || free(port+offset)) {
			return port, true
		}
	}
	return 0, false
}

// free claims port and reports whether it could be listened on.
func free(port int) bool {
	if !claim(port) {
		return false
	}
	_, err := listenable("127.0.0.1:" + strconv.Itoa(port))
	return err == nil
}

// ephemeralLow reads the lowest port of the kernel's range.
func ephemeralLow() (int, error) {
	b, err := os.ReadFile(portRangeFile)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, fmt.Errorf("%s: %q is not two ports", portRangeFile, b)
	}
	return strconv.Atoi(f[0])
}

// claim reports whether port was not handed out before, and takes it.
func claim(port int) bool {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports[port] {
		return false
	}
	handedOut.ports[port] = true
	return true
}

// listenable listens on addr and closes it again, returning the address
// it got (port 0: the kernel's pick).
func listenable(addr string) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	got := l.Addr().String()
	_ = l.Close()
	return got, nil
}
