package testinfra

import (
	"errors"
	"os"
	"testing"

	"github.com/chatrelay/chat/internal/testinfra/toolcache"
)

// ToolBinary returns the path of a test tool built by `make tools` into the
// user cache (package toolcache: prometheus, promtool, alertmanager, amtool,
// otelcol, jaeger, helm). The tests never build one themselves: building takes
// minutes, longer than a test should wait. A missing one skips the test
// locally and fails it under CI=true.
func ToolBinary(t testing.TB, bin string) string {
	t.Helper()
	tool, err := toolcache.Lookup(bin)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tool.Path(RepoRoot(t), bin)
	if err != nil {
		t.Fatal(err)
	}
	_, err = os.Stat(p)
	switch {
	case err == nil:
		return p
	case !errors.Is(err, os.ErrNotExist):
		t.Fatal(err)
	case InCI():
		t.Fatalf("%s (%s) is not built at %s: CI must build it (make tools)", bin, tool.Dir, p)
	default:
		t.Skipf("%s (%s) is not built; run `make tools`", bin, tool.Dir)
	}
	return ""
}
