package telemetry

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
)

// make run printed ~20 lines of franz-go JSON before its banner: a person
// at a terminal gets text, and a library's info lines are dropped unless
// the process logs at debug.

func TestTextLinesForATerminal(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(&buf, "svc", slog.LevelInfo, true)
	log.InfoContext(WithCorrelationID(context.Background(), "corr-1"), "hello there", "k", "v")
	line := strings.TrimSpace(buf.String())
	want := regexp.MustCompile(`^time=\d\d:\d\d:\d\d\.\d{3} level=INFO msg="hello there" service=svc k=v correlation_id=corr-1$`)
	if !want.MatchString(line) {
		t.Fatalf("terminal line %q does not match %s", line, want)
	}
}

func TestLibraryChatterKeptAtWarn(t *testing.T) {
	for _, tc := range []struct {
		level     slog.Level
		wantInfos int // library info lines written
	}{
		{slog.LevelInfo, 0},
		{slog.LevelDebug, 1},
	} {
		var buf bytes.Buffer
		log := NewLogger(&buf, "svc", tc.level)
		lib := log.With(LibraryKey, "franz-go")
		lib.Info("joining group")
		lib.WithGroup("g").Info("balanced")
		lib.Warn("connection lost")
		log.Info("own line")
		log.With(LibraryKey, "mine").Info("own component")
		out := buf.String()
		if got := strings.Count(out, "joining group"); got != tc.wantInfos {
			t.Errorf("level %v: %d library info lines, want %d:\n%s", tc.level, got, tc.wantInfos, out)
		}
		if tc.wantInfos == 0 && (strings.Contains(out, "balanced") || lib.Enabled(context.Background(), slog.LevelInfo)) {
			t.Errorf("level %v: a library's logger (or its group) still writes info:\n%s", tc.level, out)
		}
		for _, w := range []string{"connection lost", "own line", "own component"} {
			if !strings.Contains(out, w) {
				t.Errorf("level %v: %q missing:\n%s", tc.level, w, out)
			}
		}
	}
}

func TestNotATerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for name, out := range map[string]io.Writer{"pipe": w, "buffer": &bytes.Buffer{}} {
		if isTerminal(out) {
			t.Errorf("%s taken for a terminal", name)
		}
	}
}
