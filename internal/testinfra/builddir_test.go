package testinfra

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// The build directories of ended processes go; those of running ones (this
// one, pid 1) and anything not named like a build directory stay.
func TestEndedProcessesBuildDirsAreRemoved(t *testing.T) {
	ended := exec.Command("true")
	if err := ended.Run(); err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	names := map[string]bool{ // name → should stay
		strconv.Itoa(ended.Process.Pid) + "-123": false,
		strconv.Itoa(os.Getpid()) + "-456":       true,
		"1-789":                                  true,
		"not-a-build":                            true,
		"notes.txt":                              true,
	}
	for name := range names {
		if err := os.MkdirAll(filepath.Join(parent, name, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	removeEndedBuildDirs(parent)
	for name, stay := range names {
		_, err := os.Stat(filepath.Join(parent, name))
		if exists := err == nil; exists != stay {
			t.Errorf("%s: exists %v, want %v", name, exists, stay)
		}
	}
}

// A build directory is named after its process, so the next test process
// can tell when it is no longer used.
func TestNewBuildDirIsNamedAfterThisProcess(t *testing.T) {
	dir, err := newBuildDir()
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if filepath.Dir(dir) != buildParent() {
		t.Fatalf("%s is not under %s", dir, buildParent())
	}
	want := strconv.Itoa(os.Getpid()) + "-"
	if name := filepath.Base(dir); len(name) <= len(want) || name[:len(want)] != want {
		t.Fatalf("build directory %s, want a name starting %q", name, want)
	}
}
