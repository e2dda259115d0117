package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// decodeObject parses a plaintext into a generic tree, keeping numbers as
// written (json.Number) and every field, known or not.
func decodeObject(plaintext []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(plaintext))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, malformedJSON(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: plaintext is not a JSON object", ErrMalformed)
	}
	return obj, nil
}

// malformedJSON describes a JSON syntax error by its offset only: the
// decoder's own message quotes the offending input.
func malformedJSON(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("%w: invalid JSON at byte %d", ErrMalformed, se.Offset)
	}
	return fmt.Errorf("%w: invalid JSON", ErrMalformed)
}

// timeType is how the data types declare a WeChat Pay time; check accepts
// every format ParseTime does and writes it back as RFC 3339.
var timeType = reflect.TypeFor[time.Time]()

// check walks a decoded JSON value v alongside the Go type t it is meant to
// decode into. It verifies the JSON type of every field t declares, requires
// integers where t has int64, and returns v with every time.Time field
// replaced by its normalised RFC 3339 string, as Time.String writes it
// (objects and arrays are updated in place). Fields t does not declare are
// left as they are. A key that differs from a declared field only in letter
// case is refused, because encoding/json would silently decode it into that
// field while the key itself stayed in Data. Null stands for an absent
// field. Errors name the field's path, never its value.
func check(v any, t reflect.Type, path string) (any, error) {
	if v == nil {
		return nil, nil
	}
	if t == timeType {
		s, ok := v.(string)
		if !ok {
			return nil, fieldError(path, "want a time string")
		}
		tm, err := ParseTime(s)
		if err != nil {
			return nil, fieldError(path, "unrecognised time format")
		}
		return tm.String(), nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		return check(v, t.Elem(), path)
	case reflect.String:
		if _, ok := v.(string); !ok {
			return nil, fieldError(path, "want a string")
		}
	case reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			return nil, fieldError(path, "want an integer")
		}
		if _, err := strconv.ParseInt(n.String(), 10, 64); err != nil {
			return nil, fieldError(path, "want an integer")
		}
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			return nil, fieldError(path, "want an array")
		}
		for i := range arr {
			nv, err := check(arr[i], t.Elem(), path+"["+strconv.Itoa(i)+"]")
			if err != nil {
				return nil, err
			}
			arr[i] = nv
		}
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, fieldError(path, "want an object")
		}
		fields := fieldsOf(t)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys) // report the same field first every time
		for _, k := range keys {
			ft, known := fields[k]
			if !known {
				for name := range fields {
					if strings.EqualFold(k, name) {
						return nil, fieldError(join(path, name), "also present with different letter case")
					}
				}
				continue
			}
			nv, err := check(obj[k], ft, join(path, k))
			if err != nil {
				return nil, err
			}
			obj[k] = nv
		}
	default:
		panic("events: check: unsupported kind " + t.Kind().String()) // unreachable: see mustCheckable
	}
	return v, nil
}

// mustCheckable panics unless check handles every field reachable from t. The
// table calls it for each row's type while the package initialises, so a field
// of a new kind fails every test at once instead of a notification in
// production.
func mustCheckable(t reflect.Type) {
	if t == timeType {
		return
	}
	switch t.Kind() {
	case reflect.String, reflect.Int64:
	case reflect.Pointer, reflect.Slice:
		mustCheckable(t.Elem())
	case reflect.Struct:
		for _, ft := range fieldsOf(t) {
			mustCheckable(ft)
		}
	default:
		panic("events: " + t.String() + ": check cannot handle kind " + t.Kind().String())
	}
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func fieldError(path, problem string) error {
	return fmt.Errorf("%w: field %s: %s", ErrMalformed, path, problem)
}

var fieldCache sync.Map // reflect.Type → map[string]reflect.Type

// fieldsOf maps the JSON names of a struct's fields to their types.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.IsExported() && name != "" && name != "-" {
			m[name] = f.Type
		}
	}
	fieldCache.Store(t, m)
	return m
}
