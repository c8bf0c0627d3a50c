package gateway

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/chatrelay/chat/internal/protocol"
)

// The gateway writes no refusal reason, close reason or refusal message of
// its own: they come from internal/protocol's table, so a new one cannot
// drift from the metrics' zero values, their Help, or the docs.
func TestRefusalsComeFromTheTable(t *testing.T) {
	vocab := map[string]string{}
	for _, r := range protocol.Refusals() {
		vocab[r.Reason] = "reason"
		if r.Message != "" {
			vocab[r.Message] = "message"
		}
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			if v, err := strconv.Unquote(lit.Value); err == nil && vocab[v] != "" {
				t.Errorf("%s: the refusal %s %q is written here; use internal/protocol's table", fset.Position(lit.Pos()), vocab[v], v)
			}
			return true
		})
	}
}
