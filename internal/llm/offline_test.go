package llm

import (
	"fmt"
	"strings"
	"testing"
)

func TestCountWordsIsFieldsLength(t *testing.T) {
	for _, s := range []string{"", " ", "one", "  two  words ", "tabs\tand\nnewlines\r\n", "ünïcödé wörds\u00a0nbsp\u2003em", "a,b;c"} {
		t.Run(fmt.Sprintf("%q", s), func(t *testing.T) {
			if got, want := countWords(s), len(strings.Fields(s)); got != want {
				t.Fatalf("countWords = %d, strings.Fields gives %d", got, want)
			}
		})
	}
}
