package cursor

import "testing"

func TestValid(t *testing.T) {
	for c, want := range map[string]bool{
		"0-0": true, "1795741934041-1": true, "18446744073709551615-18446744073709551615": true,
		"": false, "-": false, "1-": false, "-1": false, "1-1-1": false, "a-1": false, "1-b": false,
		"18446744073709551616-0": false, "123456789012345678901-0": false, " 1-1": false, "1-1\n": false,
	} {
		if got := Valid(c); got != want {
			t.Errorf("Valid(%q) = %v, want %v", c, got, want)
		}
	}
}

func TestCompare(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1-0", "1-0", 0}, {"1-1", "1-0", 1}, {"1-0", "1-1", -1}, {"2-0", "1-9", 1},
		{"10-0", "9-0", 1}, {"", "0-0", -1}, {"0-1", "", 1}, {"", "", 0}, {Start, "1-0", -1},
	} {
		if got := Compare(tc.a, tc.b); got != tc.want {
			t.Errorf("Compare(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
	if Max("1-2", "1-10") != "1-10" || Max("", "0-0") != "0-0" || !After("3-0", "2-99") {
		t.Error("Max/After disagree with Compare")
	}
}
