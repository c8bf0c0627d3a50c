// Command build builds the test tools that are missing from the user cache
// (`make tools` runs it; see package toolcache). With -path it prints where
// a binary is cached instead.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"

	"github.com/chatrelay/chat/internal/testinfra/toolcache"
)

func main() {
	root := flag.String("root", ".", "the repository root")
	pathOf := flag.String("path", "", "print the cached path of this binary and exit")
	flag.Parse()
	if err := run(*root, *pathOf, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run builds the named tools (all when none is named), one after the other:
// each `go build` already uses every core.
func run(root, pathOf string, names []string) error {
	if pathOf != "" {
		t, err := toolcache.Lookup(pathOf)
		if err != nil {
			return err
		}
		p, err := t.Path(root, pathOf)
		if err != nil {
			return err
		}
		fmt.Println(p)
		return nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	built := false
	for _, t := range toolcache.Tools {
		if len(names) > 0 && !slices.Contains(names, t.Name) {
			continue
		}
		missing, err := t.Missing(root)
		if err != nil {
			return err
		}
		built = built || len(missing) > 0
		if err := t.Build(ctx, root, os.Stdout); err != nil {
			return err
		}
	}
	if !built {
		fmt.Println("make tools: all test tools present")
	}
	return nil
}
