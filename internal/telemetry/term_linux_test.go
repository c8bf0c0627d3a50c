package telemetry

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair: what is written to tty is read
// from ptmx.
func openPTY(t *testing.T) (ptmx, tty *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { _ = ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	t.Cleanup(func() { _ = tty.Close() })
	return ptmx, tty
}

func TestTerminalGetsText(t *testing.T) {
	ptmx, tty := openPTY(t)
	NewLogger(tty, "svc", slog.LevelInfo).Info("hello")
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 4096)
		n, _ := ptmx.Read(b)
		got <- string(b[:n])
	}()
	select {
	case line := <-got:
		if !strings.Contains(line, "level=INFO msg=hello service=svc") || strings.Contains(line, "{") {
			t.Fatalf("a terminal got %q, want a text line", line)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing written to the terminal")
	}
}
