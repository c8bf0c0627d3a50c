package deploycheck

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Version pins that have to agree across files: what the images are built
// from and what the code needs.

var (
	goModGoLine        = regexp.MustCompile(`(?m)^go\s+(\S+)\s*$`)
	goModToolchainLine = regexp.MustCompile(`(?m)^toolchain\s+go(\S+)\s*$`)
	golangImage        = regexp.MustCompile(`(?mi)^FROM\s+(?:--\S+\s+)*golang:(\S+)`)
	exactVersion       = regexp.MustCompile(`^\d+\.\d+\.\d+$`)
)

// goVersion is the Go release a go.mod needs: its toolchain line when it has
// one, otherwise its go line.
func goVersion(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := goModToolchainLine.FindSubmatch(b); m != nil {
		return string(m[1])
	}
	m := goModGoLine.FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s has no go line", path)
	}
	return string(m[1])
}

// versionParts splits "1.26.8" into numbers; a part that is not a number
// (a pre-release) fails the test rather than being compared as text.
func versionParts(t *testing.T, v string) []int {
	t.Helper()
	var out []int
	for _, p := range strings.Split(v, ".") {
		n, err := strconv.Atoi(p)
		if err != nil {
			t.Fatalf("version %q: %v", v, err)
		}
		out = append(out, n)
	}
	return out
}

// versionLess reports whether a is an older release than b.
func versionLess(t *testing.T, a, b string) bool {
	pa, pb := versionParts(t, a), versionParts(t, b)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		if pa[i] != pb[i] {
			return pa[i] < pb[i]
		}
	}
	return len(pa) < len(pb)
}

// Defect: go.mod said go 1.26.8 while the Dockerfile built FROM
// golang:1.26-bookworm. The official images set GOTOOLCHAIN=local, so an
// older cached 1.26.x image refused the module instead of building it.
func TestGoImageMatchesGoMod(t *testing.T) {
	root := repoRoot(t)
	want := goVersion(t, filepath.Join(root, "go.mod"))
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	froms := golangImage.FindAllSubmatch(df, -1)
	if len(froms) == 0 {
		t.Fatal("Dockerfile: no FROM golang:<tag> build stage")
	}
	for _, m := range froms {
		tag := string(m[1])
		version, _, _ := strings.Cut(tag, "-")
		if !exactVersion.MatchString(version) {
			t.Errorf("Dockerfile: FROM golang:%s floats; pin the patch release (golang:%s-…)", tag, want)
			continue
		}
		if version != want {
			t.Errorf("Dockerfile: FROM golang:%s, but go.mod needs go %s: change both together", tag, want)
		}
	}
	// The test tools' modules are built by the same Go on the same machine
	// (make tools): none may need a newer release than the main module.
	for _, pattern := range []string{"tools/go.mod", "tools/*/go.mod"} {
		mods, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mods {
			if tv := goVersion(t, m); versionLess(t, want, tv) {
				rel, _ := filepath.Rel(root, m)
				t.Errorf("%s needs go %s, newer than go.mod's %s", rel, tv, want)
			}
		}
	}
}
