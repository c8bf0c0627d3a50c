package testinfra

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The service binaries a test process builds (BuildServices,
// BuildServicesOpt) live in a directory of their own under buildParent,
// named after the process's pid. A test process has no exit hook that all
// packages share (TestMain is one package's), so nothing removes them when
// it ends; instead each new build first removes the directories of
// processes that have ended. Without this, every test process left its
// binaries behind — about 250 MB a build with -race, 60 GB in a day of test
// and perf runs on one machine, until the disk was full.
func buildParent() string { return filepath.Join(os.TempDir(), "chat-test-bin") }

// newBuildDir makes this process's next build directory, after removing
// the ones of ended processes.
func newBuildDir() (string, error) {
	parent := buildParent()
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	removeEndedBuildDirs(parent)
	return os.MkdirTemp(parent, strconv.Itoa(os.Getpid())+"-")
}

// removeEndedBuildDirs removes parent's build directories whose process is
// gone. A directory whose pid was since reused stays until that process
// ends too; names that are not "<pid>-…" are left alone.
func removeEndedBuildDirs(parent string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		p, _, ok := strings.Cut(e.Name(), "-")
		pid, err := strconv.Atoi(p)
		if !ok || err != nil || pid <= 0 || running(pid) {
			continue
		}
		_ = os.RemoveAll(filepath.Join(parent, e.Name()))
	}
}

// running says whether a process with this pid exists (one of another
// user's answers EPERM: it exists).
func running(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
