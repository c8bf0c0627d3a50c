package toolcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Missing returns the binaries of t not yet in the cache, with their paths.
func (t Tool) Missing(root string) (map[string]string, error) {
	missing := map[string]string{}
	for _, b := range t.Bins {
		p, err := t.Path(root, b.Name)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			missing[b.Name] = p
		} else if err != nil {
			return nil, fmt.Errorf("tool %s: %w", t.Name, err)
		}
	}
	return missing, nil
}

// Build builds t's missing binaries into the cache with one `go build` in
// t's module, then moves each into place: a build cut short leaves nothing
// a test would take for a tool. Older builds of the same binaries go.
func (t Tool) Build(ctx context.Context, root string, log io.Writer) error {
	missing, err := t.Missing(root)
	if err != nil || len(missing) == 0 {
		return err
	}
	v, err := t.Version(root)
	if err != nil {
		return err
	}
	cache, err := CacheDir()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return fmt.Errorf("tool %s: %w", t.Name, err)
	}
	tmp, err := os.MkdirTemp(cache, "build-"+t.Name+"-")
	if err != nil {
		return fmt.Errorf("tool %s: %w", t.Name, err)
	}
	defer os.RemoveAll(tmp)

	args := []string{"build", "-o", tmp + string(filepath.Separator)}
	fl, err := t.ldflags(root)
	if err != nil {
		return err
	}
	if fl != "" {
		args = append(args, "-ldflags", fl)
	}
	for _, b := range t.Bins {
		if _, ok := missing[b.Name]; ok {
			args = append(args, b.Pkg)
		}
	}
	fmt.Fprintf(log, "make tools: building %s %s (%s; once, minutes on a fresh machine)\n", t.Name, t.Release(v), strings.Join(slices.Sorted(maps.Keys(missing)), ", "))
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Join(root, t.Dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s in %s: %w\n%s", strings.Join(args, " "), t.Dir, err, out)
	}
	for _, b := range t.Bins {
		dst, ok := missing[b.Name]
		if !ok {
			continue
		}
		if err := install(filepath.Join(tmp, t.builtName(b)), dst); err != nil {
			return fmt.Errorf("tool %s: %w", t.Name, err)
		}
	}
	fmt.Fprintf(log, "make tools: built %s in %s\n", t.Name, time.Since(start).Round(time.Second))
	return nil
}

// builtName is the file `go build -o dir/` writes for b: the last element
// of its package path, or of the module directory for ".".
func (t Tool) builtName(b Bin) string {
	if b.Pkg == "." {
		return filepath.Base(t.Dir)
	}
	return path.Base(b.Pkg)
}

// install moves a fresh binary to dst and removes the older builds of the
// same binary (<name>-<other version or key>) next to it.
func install(src, dst string) error {
	if err := os.Rename(src, dst); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	name := strings.SplitN(filepath.Base(dst), "-v", 2)[0]
	old, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), name+"-v*"))
	for _, f := range old {
		if f != dst {
			_ = os.Remove(f)
		}
	}
	return nil
}
