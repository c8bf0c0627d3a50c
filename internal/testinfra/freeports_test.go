package testinfra

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Every port FreeAddr hands out lies below the range the kernel takes
// outgoing connections' ports from, and none twice: with the kernel's pick
// (the code before) every one lay inside it.
func TestFreeAddrPicksBelowTheKernelsRange(t *testing.T) {
	low, err := ephemeralLow()
	if err != nil {
		t.Fatal(err)
	}
	if low-pickFloor < minPickable {
		t.Fatalf("this machine's range starts at %d: nothing to test below it", low)
	}
	seen := map[int]bool{}
	for range 300 {
		p := portOf(t, FreeAddr(t))
		if p < pickFloor || p >= low {
			t.Fatalf("FreeAddr gave port %d, want one in [%d, %d)", p, pickFloor, low)
		}
		if seen[p] {
			t.Fatalf("FreeAddr gave port %d twice", p)
		}
		seen[p] = true
	}
}

// forcePicks makes the next picks return ports, then FreeAddr's own.
func forcePicks(t *testing.T, ports ...int) {
	t.Helper()
	orig := pick
	t.Cleanup(func() { pick = orig })
	pick = func(n int) int {
		if len(ports) == 0 {
			return orig(n)
		}
		p := ports[0]
		ports = ports[1:]
		return p - pickFloor
	}
}

// A port something listens on is passed over, and so is one this process
// handed out before, though nothing listens on it yet.
func TestFreeAddrSkipsBoundAndHandedOutPorts(t *testing.T) {
	bound := portOf(t, FreeAddr(t))
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(bound))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	given := portOf(t, FreeAddr(t))
	forcePicks(t, bound, given)
	p := portOf(t, FreeAddr(t))
	if p == bound || p == given {
		t.Fatalf("FreeAddr gave %d again (bound %d, handed out %d)", p, bound, given)
	}
	// The bound port was passed over, not lost: once free it is not handed
	// out again either, as it was claimed when tried.
	forcePicks(t, bound)
	if p := portOf(t, FreeAddr(t)); p == bound {
		t.Fatalf("FreeAddr gave %d, tried before", p)
	}
}

// A kernel whose range leaves too few ports below it, or a range that
// cannot be read, leaves the pick to the kernel.
func TestFreeAddrFallsBackToTheKernel(t *testing.T) {
	orig := portRangeFile
	t.Cleanup(func() { portRangeFile = orig })
	low := filepath.Join(t.TempDir(), "range")
	if err := os.WriteFile(low, []byte("12000\t60999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{low, filepath.Join(t.TempDir(), "missing")} {
		portRangeFile = file
		forcePicks(t, pickFloor+1) // would be taken if it picked below
		if p := portOf(t, FreeAddr(t)); p == pickFloor+1 {
			t.Errorf("range file %s: FreeAddr picked %d below the range itself", filepath.Base(file), p)
		}
	}
}

// A cluster node's port is picked with its bus port (10000 above) free and
// below the kernel's range as well; one whose bus port is bound is passed
// over.
func TestPickBelowRangeKeepsTheOffsetPortFreeAndBelow(t *testing.T) {
	low, err := ephemeralLow()
	if err != nil {
		t.Fatal(err)
	}
	// A port whose bus port something listens on.
	busy, ok := pickBelowRange(clusterBusOffset)
	if !ok {
		t.Fatal("no port picked")
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(busy+clusterBusOffset))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	handedOut.Lock()
	delete(handedOut.ports, busy) // as if never tried
	handedOut.Unlock()
	forcePicks(t, busy)
	for range 50 {
		p, ok := pickBelowRange(clusterBusOffset)
		if !ok {
			t.Fatal("no port picked")
		}
		if p == busy || p+clusterBusOffset >= low {
			t.Fatalf("picked %d (bus %d); the range starts at %d, %d's bus is bound", p, p+clusterBusOffset, low, busy)
		}
	}
}
