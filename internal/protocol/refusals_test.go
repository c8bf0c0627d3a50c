package protocol

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The refusal table is the only source of its codes, labels and messages;
// the docs must say what it says.

func TestRefusalTableIsWellFormed(t *testing.T) {
	label := regexp.MustCompile(`^[a-z][a-z_]*$`)
	for _, r := range Refusals() {
		if !label.MatchString(r.Reason) || r.When == "" || r.Kind == 0 {
			t.Errorf("%+v: needs a snake_case reason, a kind and a when", r)
		}
		if r.Kind == Disconnect && r.Code == 0 {
			t.Errorf("%s: a disconnect needs a close code", r.Reason)
		}
		if r.Code != 0 && r.Code != CloseAbnormal && r.Message == "" && r.Code != CloseNormal {
			t.Errorf("%s: a close frame needs a reason text", r.Reason)
		}
		if len(r.Message) > 123 {
			t.Errorf("%s: a close reason holds at most 123 bytes", r.Reason)
		}
	}
}

func TestREADMEHasTheRefusalTable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- refusals:begin -->\n")
	got, _, ok2 := strings.Cut(rest, "<!-- refusals:end -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no <!-- refusals:begin --> ... <!-- refusals:end --> block")
	}
	if want := Markdown(); got != want {
		t.Fatalf("README.md's refusal table differs from internal/protocol/refusals.go; paste this between the markers:\n%s", want)
	}
}

// docs/observability.md lists each counter's label values; they must be
// the table's.
func TestObservabilityDocListsTheLabels(t *testing.T) {
	b, err := os.ReadFile("../../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	for k, metric := range map[Kind]string{Connect: "chat_ws_connects_total", Disconnect: "chat_ws_disconnects_total", Frame: "chat_gateway_messages_rejected_total"} {
		row := regexp.MustCompile("(?m)^\\| `" + metric + "` \\| counter \\| `[a-z]+`: ([a-z_, ]+) \\|").FindStringSubmatch(string(b))
		if row == nil {
			t.Errorf("docs/observability.md has no row for %s", metric)
			continue
		}
		got := strings.Split(row[1], ", ")
		if want := Labels(k); !slices.Equal(got, want) {
			t.Errorf("docs/observability.md: %s lists %v; the table has %s", metric, got, strings.Join(want, ", "))
		}
	}
}
