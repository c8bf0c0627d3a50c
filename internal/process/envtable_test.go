package process_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/chatrelay/chat/internal/aiconsumer"
	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/devstack"
	"github.com/chatrelay/chat/internal/gateway"
	"github.com/chatrelay/chat/internal/grouplag"
	"github.com/chatrelay/chat/internal/process"
	"github.com/chatrelay/chat/internal/relay"
	"github.com/chatrelay/chat/internal/telemetry"
)

// The README's environment table (## Configuration) is written by hand for
// people; this test holds it to the configuration structs, so that a new
// variable, a changed default or a variable that moved between services
// cannot leave the table behind unnoticed.

const readmePath = "../../README.md"

// readers is what each service reads: process.Build loads config.Ops, the
// group lag exporter's configuration and the service's own configuration;
// the dev stack adds its own settings (and, running all three services,
// reads everything they read).
var readers = map[string][]any{
	process.Gateway:    {config.Ops{}, grouplag.Config{}, gateway.Config{}},
	process.AIConsumer: {config.Ops{}, grouplag.Config{}, aiconsumer.Config{}},
	process.Relay:      {config.Ops{}, grouplag.Config{}, relay.Config{}},
	devstackName:       {devstack.Config{}},
}

const devstackName = "devstack"

// sdkVars are read by the OpenTelemetry SDK, not through a configuration
// struct; the table lists them, and nothing else may lack a struct field.
var sdkVars = telemetry.EnvVars

// serviceOrder is the order of names in a "used by" cell; "all" stands for
// the three services.
var serviceOrder = append(process.All(), devstackName)

func TestREADMEEnvTableMatchesConfigStructs(t *testing.T) {
	for _, s := range process.All() {
		if readers[s] == nil {
			t.Fatalf("service %s is not in this test's readers map; add the configuration structs it loads", s)
		}
	}
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range tableProblems(string(readme), structVars(t)) {
		t.Error(p)
	}
}

// Each kind of drift is reported, with the row to write.
func TestREADMEEnvTableCatchesDrift(t *testing.T) {
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	vars := structVars(t)
	tests := []struct{ name, old, new, want string }{
		{"changed default", "| `WS_SEND_QUEUE` | `256` |", "| `WS_SEND_QUEUE` | `512` |",
			"WS_SEND_QUEUE: the README's default is `512`, the struct's `256`"},
		{"missing row", "| `WS_SEND_QUEUE` |", "| `WS_SEND_QUEUX` |",
			"no row for WS_SEND_QUEUE (gateway.Config.SendQueue); add\n| `WS_SEND_QUEUE` | `256` | websocket-server | <meaning> |"},
		{"row without a struct", "| `WS_SEND_QUEUE` |", "| `WS_SEND_QUEUE` / `WS_SEND_QUEUX` |",
			"WS_SEND_QUEUX: no configuration struct reads it"},
		{"wrong services", "| `HTTP_ADDR` | `:8080` | websocket-server |", "| `HTTP_ADDR` | `:8080` | all |",
			"HTTP_ADDR: the README says used by all; it is read by websocket-server"},
		{"unreadable default", "| `WS_SEND_QUEUE` | `256` |", "| `WS_SEND_QUEUE` | 256 |",
			"cannot read the default cell"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			broken := strings.Replace(string(readme), tc.old, tc.new, 1)
			if broken == string(readme) {
				t.Fatalf("the README has no %q to break", tc.old)
			}
			problems := strings.Join(tableProblems(broken, vars), "\n")
			if !strings.Contains(problems, tc.want) {
				t.Fatalf("want a problem containing %q, got:\n%s", tc.want, problems)
			}
		})
	}
}

// envVar is one variable as the structs declare it.
type envVar struct {
	def     string   // the envDefault tag; "" when there is none
	readers []string // in serviceOrder
	field   string   // pkg.Type.Field, for messages
	doc     string   // the field's comment, for the meaning column
}

// structVars walks every service's configuration structs, nested ones
// included, as caarlos0/env does.
func structVars(t *testing.T) map[string]*envVar {
	vars := map[string]*envVar{}
	for _, service := range serviceOrder {
		for _, cfg := range readers[service] {
			walkEnv(reflect.TypeOf(cfg), "", func(name string, owner reflect.Type, f reflect.StructField) {
				v := vars[name]
				if v == nil {
					v = &envVar{def: f.Tag.Get("envDefault"), field: typeName(owner) + "." + f.Name, doc: fieldDoc(t, owner, f.Name)}
					vars[name] = v
				} else if d := f.Tag.Get("envDefault"); d != v.def {
					t.Errorf("%s: envDefault %q in %s.%s but %q in %s", name, d, typeName(owner), f.Name, v.def, v.field)
				}
				if !slices.Contains(v.readers, service) {
					v.readers = append(v.readers, service)
				}
			})
		}
	}
	return vars
}

func walkEnv(t reflect.Type, prefix string, visit func(name string, owner reflect.Type, f reflect.StructField)) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		switch {
		case !f.IsExported():
		case name != "":
			visit(prefix+name, t, f)
		case f.Type.Kind() == reflect.Struct:
			walkEnv(f.Type, prefix+f.Tag.Get("envPrefix"), visit)
		}
	}
}

func typeName(t reflect.Type) string { return filepath.Base(t.PkgPath()) + "." + t.Name() }

// fieldDoc is the comment of a struct field, read from the package's source,
// so that a missing row's message can say what the variable is for.
func fieldDoc(t *testing.T, owner reflect.Type, field string) string {
	module := strings.TrimSuffix(reflect.TypeOf(config.Ops{}).PkgPath(), "/internal/config")
	dir := filepath.Join("..", "..", strings.TrimPrefix(owner.PkgPath(), module))
	pkgs, err := parser.ParseDir(token.NewFileSet(), dir, func(fi os.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, parser.ParseComments)
	if err != nil {
		t.Fatalf("reading the comments of %s: %v", owner, err)
	}
	doc := ""
	for _, pkg := range pkgs {
		ast.Inspect(pkg, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok || ts.Name.Name != owner.Name() {
				return true
			}
			doc = structFieldDoc(ts.Type.(*ast.StructType), field)
			return false
		})
	}
	return doc
}

// structFieldDoc is the field's own comment or else the first comment in
// the struct that names it (one comment often covers a pair of fields).
func structFieldDoc(st *ast.StructType, field string) string {
	var own, naming string
	for _, f := range st.Fields.List {
		text := strings.Join(strings.Fields(f.Doc.Text()+" "+f.Comment.Text()), " ")
		if slices.ContainsFunc(f.Names, func(id *ast.Ident) bool { return id.Name == field }) {
			own = text
		}
		if naming == "" && regexp.MustCompile(`\b`+field+`\b`).MatchString(text) {
			naming = text
		}
	}
	if own != "" {
		return own
	}
	return naming
}

// row is one line of the table: one or more variables sharing a meaning.
type row struct {
	vars     []string
	defaults []string // one per variable; "" for "—"
	usedBy   []string // expanded, in serviceOrder
}

var varName = regexp.MustCompile("`([A-Z][A-Z0-9_]*)`")

// tableProblems compares the README's table with the structs' variables.
func tableProblems(readme string, vars map[string]*envVar) []string {
	rows, problems := parseTable(readme)
	seen := map[string]bool{}
	for _, r := range rows {
		for i, name := range r.vars {
			seen[name] = true
			v := vars[name]
			switch {
			case v == nil && slices.Contains(sdkVars, name):
			case v == nil:
				problems = append(problems, fmt.Sprintf("%s: no configuration struct reads it; remove it from the README's table (or, if the OpenTelemetry SDK reads it, add it to telemetry.EnvVars)", name))
			case r.defaults[i] != v.def:
				problems = append(problems, fmt.Sprintf("%s: the README's default is `%s`, the struct's `%s` (%s); write %s in the default column", name, r.defaults[i], v.def, v.field, defaultCell(v.def)))
			case !slices.Equal(r.usedBy, v.readers):
				problems = append(problems, fmt.Sprintf("%s: the README says used by %s; it is read by %s; write that in the used-by column (split the row if its variables differ)", name, usedByCell(r.usedBy), usedByCell(v.readers)))
			}
		}
	}
	for name, v := range vars {
		if !seen[name] {
			doc := "the field has no comment: say what it changes"
			if v.doc != "" {
				doc = "its comment says: " + v.doc
			}
			problems = append(problems, fmt.Sprintf("README.md, ## Configuration: no row for %s (%s); add\n| `%s` | %s | %s | <meaning> |\nwhere <meaning> is a few words for an operator (%s)",
				name, v.field, name, defaultCell(v.def), usedByCell(v.readers), doc))
		}
	}
	for _, name := range sdkVars {
		if !seen[name] {
			problems = append(problems, fmt.Sprintf("%s is in sdkVars but has no row in the README's table", name))
		}
	}
	slices.Sort(problems)
	return problems
}

// parseTable reads the rows of the ## Configuration table.
func parseTable(readme string) ([]row, []string) {
	_, section, _ := strings.Cut(readme, "\n## Configuration\n")
	section, _, _ = strings.Cut(section, "\n## ")
	var rows []row
	var problems []string
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		r, err := parseRow(line)
		if err != nil {
			problems = append(problems, fmt.Sprintf("README table row %q: %v", line, err))
			continue
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		problems = append(problems, "README.md has no ## Configuration table")
	}
	return rows, problems
}

func parseRow(line string) (row, error) {
	cells := strings.Split(strings.Trim(line, "| "), " | ")
	if len(cells) != 4 {
		return row{}, fmt.Errorf("want 4 cells (variable | default | used by | meaning), got %d; a '|' inside a cell splits it", len(cells))
	}
	var r row
	for _, m := range varName.FindAllStringSubmatch(cells[0], -1) {
		r.vars = append(r.vars, m[1])
	}
	if rest := strings.NewReplacer(" / ", "", ", ", "").Replace(varName.ReplaceAllString(cells[0], "")); rest != "" {
		return row{}, fmt.Errorf("the variable cell holds more than `NAME`s separated by \" / \" or \", \": %q", rest)
	}
	defaults, ok := parseDefaults(cells[1])
	switch {
	case !ok:
		return row{}, fmt.Errorf("cannot read the default cell %q: want — or `value`s separated by \" / \" or \", \", then an optional (remark)", cells[1])
	case len(defaults) == 1:
		r.defaults = slices.Repeat(defaults, len(r.vars))
	case len(defaults) == len(r.vars):
		r.defaults = defaults
	default:
		return row{}, fmt.Errorf("%d defaults for %d variables; give one for all or one each", len(defaults), len(r.vars))
	}
	for _, s := range strings.Split(cells[2], ", ") {
		if s == "all" {
			r.usedBy = append(r.usedBy, process.All()...)
		} else if slices.Contains(serviceOrder, s) {
			r.usedBy = append(r.usedBy, s)
		} else {
			return row{}, fmt.Errorf("used by %q: want all or names from %s", s, strings.Join(serviceOrder, ", "))
		}
	}
	slices.SortFunc(r.usedBy, func(a, b string) int { return slices.Index(serviceOrder, a) - slices.Index(serviceOrder, b) })
	return r, nil
}

// parseDefaults reads "—" (no default) or "`a`", "`a` / `b`", "`a`, `b`",
// each optionally followed by a remark in parentheses.
func parseDefaults(cell string) ([]string, bool) {
	cell = strings.TrimSpace(cell)
	if rest, ok := strings.CutPrefix(cell, "—"); ok {
		return []string{""}, isRemark(rest)
	}
	var out []string
	for {
		value, rest, ok := strings.Cut(strings.TrimPrefix(cell, "`"), "`")
		if !ok || !strings.HasPrefix(cell, "`") {
			return nil, false
		}
		out = append(out, value)
		rest = strings.TrimSpace(rest)
		if next, ok := cutSeparator(rest); ok {
			cell = next
			continue
		}
		return out, isRemark(rest)
	}
}

func cutSeparator(s string) (string, bool) {
	if next, ok := strings.CutPrefix(s, "/ "); ok {
		return next, true
	}
	return strings.CutPrefix(s, ", ")
}

func isRemark(s string) bool {
	s = strings.TrimSpace(s)
	return s == "" || strings.HasPrefix(s, "(") && strings.HasSuffix(s, ")")
}

func defaultCell(def string) string {
	if def == "" {
		return "—"
	}
	return "`" + def + "`"
}

func usedByCell(services []string) string {
	if slices.Equal(services, process.All()) {
		return "all"
	}
	return strings.Join(services, ", ")
}
