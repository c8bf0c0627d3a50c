// Package testinfra starts real servers (redis-server, nginx, a kfake broker)
// and builds the project's binaries for integration tests.
//
// A test that needs a server calls the matching Start function. When the
// server's binary is missing the test is skipped on a developer machine but
// fails under CI=true: in CI a missing server is a broken environment, not a
// reason to pass.
package testinfra

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true), where missing
// servers must fail the run instead of skipping it.
func InCI() bool {
	v, _ := strconv.ParseBool(os.Getenv("CI"))
	return v
}

// RequireBinary returns the path of name on PATH. A missing binary skips the
// test locally and fails it in CI.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if InCI() {
		t.Fatalf("%s not found on PATH: CI must provide it (make test installs it)", name)
	}
	t.Skipf("%s not found on PATH; run `make test` to install it", name)
	return ""
}

// FreeAddr returns a loopback host:port that was free a moment ago, one
// the kernel does not hand out itself (see freeports.go): a server started
// on it races only other tests' picks, not every outgoing connection.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeAddr()
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	return addr
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(FreeAddr(t))
	n, _ := strconv.Atoi(p)
	return n
}
