package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
)

// clientFields maps every JSON name of ClientFrame, exactly as spelled in its
// tags, to the field's index. Every field is a string or a bool: a client
// frame is one flat JSON object of scalars, which also bounds its nesting
// depth to 1.
var clientFields = func() map[string]int {
	t := reflect.TypeFor[ClientFrame]()
	m := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || (f.Type.Kind() != reflect.String && f.Type.Kind() != reflect.Bool) {
			panic("protocol: every ClientFrame field must be a JSON-named string or bool")
		}
		m[name] = i
	}
	return m
}()

// MaxJSONDepth is the deepest nesting a client frame may have: the frame is
// an object whose values are strings, so anything nested is refused at its
// first byte, before the decoder reads it.
const MaxJSONDepth = 1

// decodeStrict fills f from data, which must be exactly one JSON object
// whose keys are ClientFrame's JSON names spelled exactly (encoding/json
// would match them case-insensitively), each at most once, each a string
// (not null, not a number, not nested), with nothing after the object.
func decodeStrict(data []byte, f *ClientFrame) error {
	// Nearly every frame takes the fast path; it accepts nothing this
	// function would refuse, and reads it the same way.
	if decodeFast(data, f) {
		return nil
	}
	*f = ClientFrame{}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	bad := func(format string, args ...any) error {
		return reject(ReasonBadJSON, "invalid JSON frame: "+format, args...)
	}
	tok, err := dec.Token()
	if err != nil {
		return bad("%s", jsonProblem(err))
	}
	if tok != json.Delim('{') {
		return bad("the frame must be a JSON object")
	}
	v := reflect.ValueOf(f).Elem()
	var seen [64]bool
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return bad("%s", jsonProblem(err))
		}
		key, _ := tok.(string) // object keys are always strings
		i, known := clientFields[key]
		if !known {
			return bad("unknown field %q", truncate(key, 32))
		}
		if seen[i] {
			return bad("field %q appears twice", key)
		}
		seen[i] = true
		tok, err = dec.Token()
		if err != nil {
			return bad("%s", jsonProblem(err))
		}
		if fv := v.Field(i); fv.Kind() == reflect.Bool {
			b, ok := tok.(bool)
			if !ok {
				return bad("field %q must be true or false", key)
			}
			fv.SetBool(b)
			continue
		}
		s, ok := tok.(string)
		if !ok {
			return bad("field %q must be a string", key)
		}
		v.Field(i).SetString(s)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return bad("%s", jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return bad("trailing data after the object")
	}
	return nil
}

// clientBoolField[i] reports whether ClientFrame field i is a bool.
var clientBoolField = func() []bool {
	t := reflect.TypeFor[ClientFrame]()
	b := make([]bool, t.NumField())
	for i := range b {
		b[i] = t.Field(i).Type.Kind() == reflect.Bool
	}
	return b
}()

// fastValue is where a field's value lies in the frame.
type fastValue struct {
	set, escaped, b bool
	start, end      int // the string's bytes, between its quotes
}

// decodeFast reads the usual frame without encoding/json's Decoder, whose
// Token API allocates several times per token (it builds, then throws away,
// a syntax error at the end of every value): about 70 allocations for a
// five-field frame, against one here.
//
// It only accepts a subset of what decodeStrict accepts: one flat object
// of known keys spelled exactly and without escapes, each at most once,
// whose values are strings without \u escapes (for string fields) or
// true/false (for bool fields), with only JSON whitespace around the
// tokens. It fills f with what decodeStrict would. For anything else (every
// frame decodeStrict refuses among them) it returns false, and
// decodeStrict reads the frame and words the refusal.
//
// data must be valid UTF-8 (the caller checked), so the bytes between
// quotes need no replacement of invalid sequences.
func decodeFast(data []byte, f *ClientFrame) bool {
	var vals [8]fastValue
	i := skipJSONSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return false
	}
	i = skipJSONSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		i++
	} else {
		for {
			ks, ke, esc, ok := scanJSONString(data, i)
			if !ok || esc {
				return false
			}
			idx, known := clientFields[string(data[ks:ke])] // no allocation for a map lookup
			if !known || idx >= len(vals) || vals[idx].set {
				return false
			}
			i = skipJSONSpace(data, ke+1)
			if i >= len(data) || data[i] != ':' {
				return false
			}
			i = skipJSONSpace(data, i+1)
			if i >= len(data) {
				return false
			}
			v := &vals[idx]
			v.set = true
			switch isBool := clientBoolField[idx]; {
			case data[i] == '"' && !isBool:
				if v.start, v.end, v.escaped, ok = scanJSONString(data, i); !ok {
					return false
				}
				i = v.end + 1
			case isBool && bytes.HasPrefix(data[i:], []byte("true")):
				v.b = true
				i += len("true")
			case isBool && bytes.HasPrefix(data[i:], []byte("false")):
				i += len("false")
			default:
				return false
			}
			i = skipJSONSpace(data, i)
			if i >= len(data) {
				return false
			}
			if data[i] == ',' {
				i = skipJSONSpace(data, i+1)
				continue
			}
			if data[i] != '}' {
				return false
			}
			i++
			break
		}
	}
	if skipJSONSpace(data, i) != len(data) {
		return false
	}
	// One copy of the frame backs every unescaped value.
	frame := string(data)
	fv := reflect.ValueOf(f).Elem()
	for idx, v := range vals {
		switch {
		case !v.set:
		case clientBoolField[idx]:
			fv.Field(idx).SetBool(v.b)
		case v.escaped:
			fv.Field(idx).SetString(unescapeJSON(data[v.start:v.end]))
		default:
			fv.Field(idx).SetString(frame[v.start:v.end])
		}
	}
	return true
}

// skipJSONSpace returns the index of the first byte at or after i that is
// not JSON whitespace.
func skipJSONSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// scanJSONString finds the string that opens at data[i]: its content lies
// in data[start:end], and data[end] is its closing quote. It reports
// escaped when the content holds escapes, and !ok for anything but a
// well-formed string whose escapes are all single-character ones.
func scanJSONString(data []byte, i int) (start, end int, escaped, ok bool) {
	if i >= len(data) || data[i] != '"' {
		return 0, 0, false, false
	}
	for j := i + 1; j < len(data); j++ {
		switch c := data[j]; {
		case c == '"':
			return i + 1, j, escaped, true
		case c < 0x20:
			return 0, 0, false, false
		case c == '\\':
			if j+1 >= len(data) || jsonUnescape[data[j+1]] == 0 {
				return 0, 0, false, false // \u escapes are left to encoding/json
			}
			escaped = true
			j++
		}
	}
	return 0, 0, false, false
}

// jsonUnescape maps the letter after a backslash to the byte it stands for.
var jsonUnescape = [256]byte{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}

// unescapeJSON decodes the content of a string that scanJSONString accepted.
func unescapeJSON(s []byte) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			b.WriteByte(jsonUnescape[s[i]])
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
