package chartcheck

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/chatrelay/chat/internal/testinfra"
)

// docs/scaling.md sizes the chart's values from the CPU per message that
// docs/performance.md measured. Its table copies one row of performance.md's
// (sizingRate msg/s): when performance.md is measured again, this test says
// which figures to copy.

const sizingRate = "500"

// mdTable finds the Markdown table whose header row contains header and
// returns its rows (header first, the separator row left out) as trimmed
// cells.
func mdTable(doc, header string) ([][]string, error) {
	var rows [][]string
	in := false
	for _, line := range strings.Split(doc, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			if in {
				break
			}
			continue
		}
		if !in && !strings.Contains(line, header) {
			continue
		}
		in = true
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if strings.Trim(strings.Join(cells, ""), "-: ") == "" {
			continue // the separator row
		}
		rows = append(rows, cells)
	}
	if rows == nil {
		return nil, fmt.Errorf("no table with a header containing %q", header)
	}
	return rows, nil
}

// measuredPerMessage is CPU ms per message by service from performance.md's
// row at sizingRate, the two gateways' columns added.
func measuredPerMessage(perf string) (map[string]float64, error) {
	rows, err := mdTable(perf, "| msg/s offered |")
	if err != nil {
		return nil, fmt.Errorf("docs/performance.md: %w", err)
	}
	col := func(name string) int { return slices.Index(rows[0], name) }
	i := slices.IndexFunc(rows, func(r []string) bool { return r[0] == sizingRate })
	if i < 0 {
		return nil, fmt.Errorf("docs/performance.md: the CPU-per-message table has no %s msg/s row; choose the row docs/scaling.md sizes from here and there", sizingRate)
	}
	want := map[string][]string{
		"websocket-server": {"gw-1", "gw-2"}, "ai-consumer": {"ai-consumer"},
		"message-relay": {"message-relay"}, "Redis": {"redis"}, "nginx": {"nginx"},
	}
	out := map[string]float64{}
	for svc, cols := range want {
		for _, c := range cols {
			j := col(c)
			if j < 0 || j >= len(rows[i]) {
				return nil, fmt.Errorf("docs/performance.md: the CPU-per-message table has no %s column", c)
			}
			v, err := strconv.ParseFloat(rows[i][j], 64)
			if err != nil {
				return nil, fmt.Errorf("docs/performance.md: %s at %s msg/s: %w", c, sizingRate, err)
			}
			out[svc] += v
		}
	}
	return out, nil
}

// scalingProblems compares docs/scaling.md's table with the measurement.
func scalingProblems(scaling string, measured map[string]float64) []string {
	rows, err := mdTable(scaling, "| CPU ms per message |")
	if err != nil {
		return []string{"docs/scaling.md: " + err.Error()}
	}
	var problems []string
	for svc, ms := range measured {
		i := slices.IndexFunc(rows, func(r []string) bool { return strings.HasPrefix(r[0], svc) })
		if i < 0 {
			problems = append(problems, fmt.Sprintf("docs/scaling.md: no row for %s", svc))
			continue
		}
		r := rows[i]
		want := []string{strconv.FormatFloat(ms, 'f', 2, 64), strconv.FormatFloat(math.Round(ms/0.7*100)/100, 'f', 2, 64)}
		if len(r) < 3 || r[1] != want[0] || r[2] != want[1] {
			problems = append(problems, fmt.Sprintf("docs/scaling.md: %s reads %v; docs/performance.md's %s msg/s row gives %s ms per message, %s cores at 70%% per 1,000 msg/s (then check the worked examples)", svc, r[1:], sizingRate, want[0], want[1]))
		}
	}
	return problems
}

func TestScalingFiguresAreMeasured(t *testing.T) {
	root := testinfra.RepoRoot(t)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(root, "docs", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	measured, err := measuredPerMessage(read("performance.md"))
	if err != nil {
		t.Fatal(err)
	}
	scaling := read("scaling.md")
	for _, p := range scalingProblems(scaling, measured) {
		t.Error(p)
	}
	// And it notices a figure that moved.
	measured["ai-consumer"] += 0.1
	if p := scalingProblems(scaling, measured); len(p) != 1 || !strings.Contains(p[0], "ai-consumer") {
		t.Errorf("a changed measurement gave %v", p)
	}
}
