package ids

import (
	"strings"
	"testing"
)

func TestNewIsSortableAndUnique(t *testing.T) {
	prev := ""
	seen := map[string]bool{}
	for i := 0; i < 10000; i++ {
		id := New()
		if len(id) != 26 {
			t.Fatalf("len %d", len(id))
		}
		if id <= prev {
			t.Fatalf("not increasing: %s after %s", id, prev)
		}
		if seen[id] {
			t.Fatalf("duplicate %s", id)
		}
		seen[id] = true
		prev = id
	}
}

func TestCorrelationID(t *testing.T) {
	tests := []struct {
		in   string
		keep bool
	}{
		{"abc-123", true},
		{"trace:42_x.y", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{"has space", false},
		{"new\nline", false},
		{"quote\"", false},
		{"ünïcode", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got := CorrelationID(tc.in)
			if tc.keep && got != tc.in {
				t.Fatalf("valid id replaced: %q → %q", tc.in, got)
			}
			if !tc.keep && (got == tc.in || !ValidCorrelationID(got)) {
				t.Fatalf("invalid id kept or bad replacement: %q → %q", tc.in, got)
			}
		})
	}
}
