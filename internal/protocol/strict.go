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
