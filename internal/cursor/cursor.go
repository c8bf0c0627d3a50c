// Package cursor is the one definition of a history cursor: the id of an
// entry in a user's history stream (a Redis Stream entry id, "ms-seq"),
// which clients resume from and connections track their position with.
//
// The history's forward-only delivered marker compares cursors in Lua
// (internal/history); that script keeps the same order as Compare, and a
// test there checks both agree.
package cursor

import "strconv"

// Start is the position before every entry: a connection positioned here
// gets the whole history. It is a valid cursor ("(0-0" is a valid
// exclusive XRANGE start).
const Start = "0-0"

// maxDigits bounds each half: a uint64 has at most 20 decimal digits.
const maxDigits = 20

// Valid reports whether c has the shape of a cursor: 1-20 digits, '-',
// 1-20 digits, and both halves fit in a uint64.
func Valid(c string) bool {
	_, _, ok := parse(c)
	return ok
}

// Compare orders two cursors (-1, 0, 1). "" sorts before every cursor; a
// malformed cursor sorts as "".
func Compare(a, b string) int {
	am, as, aok := parse(a)
	bm, bs, bok := parse(b)
	switch {
	case aok != bok:
		if aok {
			return 1
		}
		return -1
	case am != bm:
		return cmp(am, bm)
	default:
		return cmp(as, bs)
	}
}

// After reports whether a comes strictly after b.
func After(a, b string) bool { return Compare(a, b) > 0 }

// Max is the later of a and b.
func Max(a, b string) string {
	if After(a, b) {
		return a
	}
	return b
}

func parse(c string) (ms, seq uint64, ok bool) {
	dash := -1
	for i := 0; i < len(c); i++ {
		switch {
		case c[i] == '-' && dash < 0:
			dash = i
		case c[i] < '0' || c[i] > '9':
			return 0, 0, false
		}
	}
	if dash < 1 || dash > maxDigits || len(c)-dash-1 < 1 || len(c)-dash-1 > maxDigits {
		return 0, 0, false
	}
	ms, err1 := strconv.ParseUint(c[:dash], 10, 64)
	seq, err2 := strconv.ParseUint(c[dash+1:], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return ms, seq, true
}

func cmp(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
