package events

import (
	"bytes"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// The single-pass decoder. Build's reference path (check.go) decodes a
// plaintext three times: into a generic tree, through check, and from the
// re-encoded data into the row's Go type. A walker does the same work in one
// recursive-descent pass over the plaintext, driven by a plan of the Go type:
// it validates the JSON, checks and normalises the declared fields as check
// does, fills the typed value, and writes Data as encoding/json would marshal
// the checked tree (compact, object keys sorted, no HTML escaping, numbers as
// written).
//
// It only ever succeeds or declines. It declines (ok false) on anything that
// is not plainly valid: a syntax error, nesting beyond MaxDepth, a duplicate
// key, a key in another letter case than a declared field's (or any non-ASCII
// key), invalid UTF-8, a field of the wrong JSON type, an unparseable time or
// amount, and any error from the row's naming function. Build then runs the
// reference path, which defines the behaviour and words the error. So a
// decline costs a second decode but never changes a result, and the walker
// needs no error messages of its own. FuzzFastMatchesReference checks that
// every plaintext the walker accepts gives the reference's facts, byte for
// byte.

// kind is what a plan expects of a JSON value.
type kind uint8

const (
	kindAny    kind = iota // a field no Go type declares: any JSON, kept as it is
	kindString             // string
	kindInt64              // an integer that fits in int64
	kindTime               // a time string in a format ParseTime accepts, normalised
	kindStruct             // an object; its declared fields have plans
	kindPtr                // a pointer to a struct (its plan is elem)
	kindSlice              // an array (each item's plan is elem)
)

// plan is how the walker decodes one Go type.
type plan struct {
	kind   kind
	typ    reflect.Type
	elem   *plan            // kindPtr, kindSlice
	fields map[string]field // kindStruct: JSON name → field
	folded map[string]bool  // kindStruct: lower-cased JSON names, to spot letter-case variants
}

type field struct {
	index int
	plan  *plan
}

var anyPlan = &plan{kind: kindAny}

var planCache sync.Map // reflect.Type → *plan

// planOf returns the plan of t. It supports the kinds check supports
// (mustCheckable has vetted every row's type) and panics on others.
func planOf(t reflect.Type) *plan {
	if p, ok := planCache.Load(t); ok {
		return p.(*plan)
	}
	p := &plan{typ: t}
	switch {
	case t == timeType:
		p.kind = kindTime
	case t.Kind() == reflect.String:
		p.kind = kindString
	case t.Kind() == reflect.Int64:
		p.kind = kindInt64
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct && t.Elem() != timeType:
		p.kind, p.elem = kindPtr, planOf(t.Elem())
	case t.Kind() == reflect.Slice:
		p.kind, p.elem = kindSlice, planOf(t.Elem())
	case t.Kind() == reflect.Struct:
		p.kind = kindStruct
		p.fields = make(map[string]field, t.NumField())
		p.folded = make(map[string]bool, t.NumField())
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "" || name == "-" {
				// encoding/json would match such a field by its Go name, which
				// check does not know about; no data type has one.
				panic("events: " + t.String() + "." + f.Name + ": a data field needs a json name")
			}
			p.fields[name] = field{index: i, plan: planOf(f.Type)}
			p.folded[strings.ToLower(name)] = true
		}
	default:
		panic("events: " + t.String() + ": the walker cannot decode kind " + t.Kind().String())
	}
	planCache.Store(t, p)
	return p
}

// member is one member of an object in the plaintext: its key and where its
// value starts.
type member struct {
	key   string
	value int
}

// encoded is one member of an object being written: its key and the span of
// `"key":value` in walker.out.
type encoded struct {
	key        string
	start, end int
}

// walker holds one decode's state. Walkers are pooled: their scratch slices
// keep their capacity from one Build to the next.
type walker struct {
	in      []byte
	str     string // in as a string, so that decoded strings are substrings of one copy
	out     []byte
	scratch []byte    // out of the walks that only validate (a combined payment's)
	tmp     []byte    // scratch for reordering an object's members
	enc     []encoded // members of the objects being written, innermost last
	depth   int
	// stop lists top-level keys on which the walk declines, setting stopped:
	// the keys that make a payment a combined one.
	stop    []string
	stopped bool
}

var walkers = sync.Pool{New: func() any { return new(walker) }}

// newWalker returns a walker for plaintext, or false when plaintext is not
// valid UTF-8: encoding/json replaces invalid bytes, which is left to the
// reference path.
func newWalker(plaintext []byte) (*walker, bool) {
	if !utf8.Valid(plaintext) {
		return nil, false
	}
	w := walkers.Get().(*walker)
	w.in, w.str = plaintext, string(plaintext)
	return w, true
}

func (w *walker) release() {
	w.in, w.str, w.out, w.stop = nil, "", nil, nil
	w.enc = w.enc[:0]
	walkers.Put(w)
}

// decode walks the object that is the whole plaintext (white space aside)
// into dst with plan p and returns Data. With keep false, Data is written
// to scratch space and only valid until the next walk.
func (w *walker) decode(p *plan, dst reflect.Value, keep bool) ([]byte, bool) {
	w.reset(keep)
	i := w.space(0)
	if i >= len(w.in) || w.in[i] != '{' {
		return nil, false
	}
	i, ok := w.value(i, p, dst)
	if !keep {
		w.scratch = w.out[:0]
	}
	if !ok || w.space(i) != len(w.in) {
		return nil, false
	}
	return w.out, true
}

func (w *walker) reset(keep bool) {
	w.depth, w.stopped = 0, false
	w.enc = w.enc[:0]
	if keep {
		w.out = make([]byte, 0, len(w.in)+64)
	} else {
		w.out = w.scratch[:0]
	}
}

// value walks the value at in[i] (not white space) with plan p, stores it
// in dst (unless p is anyPlan or dst is invalid) and appends its encoding to
// out. It returns the offset after the value.
func (w *walker) value(i int, p *plan, dst reflect.Value) (int, bool) {
	if i >= len(w.in) {
		return 0, false
	}
	switch c := w.in[i]; c {
	case '{':
		switch p.kind {
		case kindAny:
			return w.object(i, anyPlan, reflect.Value{})
		case kindStruct:
			return w.object(i, p, dst)
		case kindPtr:
			v := reflect.New(p.elem.typ)
			next, ok := w.object(i, p.elem, v.Elem())
			dst.Set(v)
			return next, ok
		}
		return 0, false
	case '[':
		if p.kind != kindAny && p.kind != kindSlice {
			return 0, false
		}
		return w.array(i, p, dst)
	case '"':
		if p.kind != kindAny && p.kind != kindString && p.kind != kindTime {
			return 0, false
		}
		s, next, ok := w.string(i)
		if !ok {
			return 0, false
		}
		switch p.kind {
		case kindString:
			dst.SetString(s)
		case kindTime:
			t, err := ParseTime(s)
			if err != nil {
				return 0, false
			}
			s = t.String()
			// As encoding/json decodes the normalised text, so that the
			// instant and its location are the reference's.
			if err := dst.Addr().Interface().(*time.Time).UnmarshalText([]byte(s)); err != nil {
				return 0, false
			}
			w.out = appendString(w.out, s)
			return next, true
		}
		if raw := w.in[i+1 : next-1]; s == w.str[i+1:next-1] && !hasLineSeparator(raw) {
			w.out = append(w.out, w.in[i:next]...) // encoding/json would write it unchanged
		} else {
			w.out = appendString(w.out, s)
		}
		return next, true
	case 't', 'f', 'n':
		lit := "null"
		switch c {
		case 't':
			lit = "true"
		case 'f':
			lit = "false"
		}
		if !strings.HasPrefix(w.str[i:], lit) || c != 'n' && p.kind != kindAny {
			return 0, false
		}
		// null leaves a declared field at its zero value, as for an absent one.
		w.out = append(w.out, lit...)
		return i + len(lit), true
	default:
		if c != '-' && (c < '0' || c > '9') || p.kind != kindAny && p.kind != kindInt64 {
			return 0, false
		}
		next, ok := w.number(i)
		if !ok {
			return 0, false
		}
		if p.kind == kindInt64 {
			n, err := strconv.ParseInt(w.str[i:next], 10, 64)
			if err != nil {
				return 0, false
			}
			dst.SetInt(n)
		}
		w.out = append(w.out, w.in[i:next]...)
		return next, true
	}
}

// object walks the object at in[i] with the struct plan p (anyPlan for an
// undeclared field) into dst.
func (w *walker) object(i int, p *plan, dst reflect.Value) (int, bool) {
	open, first, ok := w.open()
	if !ok {
		return 0, false
	}
	i, ok = w.members(i, func(key string, j int) (int, bool) { return w.member(key, j, p, dst) })
	if !ok || !w.close(open, first) {
		return 0, false
	}
	return i, true
}

// objectOf walks members as one object with the struct plan p into dst: a
// combined payment's sub-order merged with the combined order's fields.
func (w *walker) objectOf(members []member, p *plan, dst reflect.Value) bool {
	open, first, ok := w.open()
	if !ok {
		return false
	}
	for _, m := range members {
		if _, ok := w.member(m.key, m.value, p, dst); !ok {
			return false
		}
	}
	return w.close(open, first)
}

// open starts writing an object; close ends it, putting its members in key
// order.
func (w *walker) open() (open, first int, ok bool) {
	if w.depth++; w.depth > MaxDepth {
		return 0, 0, false
	}
	w.out = append(w.out, '{')
	return len(w.out), len(w.enc), true
}

func (w *walker) close(open, first int) bool {
	if !w.sortMembers(open, first) {
		return false
	}
	w.enc = w.enc[:first]
	w.out = append(w.out, '}')
	w.depth--
	return true
}

// members reads the object at in[i], calling each for every member with its
// key and the offset of its value; each returns the offset after the value.
// It returns the offset after the object.
func (w *walker) members(i int, each func(key string, value int) (int, bool)) (int, bool) {
	i = w.space(i + 1)
	if i < len(w.in) && w.in[i] == '}' {
		return i + 1, true
	}
	for {
		if i >= len(w.in) || w.in[i] != '"' {
			return 0, false
		}
		key, next, ok := w.string(i)
		if !ok || key != w.str[i+1:next-1] {
			return 0, false // an escaped key: leave it to the reference
		}
		i = w.space(next)
		if i >= len(w.in) || w.in[i] != ':' {
			return 0, false
		}
		if i, ok = each(key, w.space(i+1)); !ok {
			return 0, false
		}
		i = w.space(i)
		if i >= len(w.in) {
			return 0, false
		}
		switch w.in[i] {
		case ',':
			i = w.space(i + 1)
		case '}':
			return i + 1, true
		default:
			return 0, false
		}
	}
}

// member writes `"key":value` for one member of an object of plan p.
func (w *walker) member(key string, i int, p *plan, dst reflect.Value) (int, bool) {
	if w.depth == 1 && slices.Contains(w.stop, key) {
		w.stopped = true
		return 0, false
	}
	fp, fdst := anyPlan, reflect.Value{}
	if f, declared := p.fields[key]; declared {
		fp, fdst = f.plan, dst.Field(f.index)
	} else if p.kind == kindStruct && foldsToDeclared(p, key) {
		return 0, false
	}
	start := len(w.out)
	if start > 0 && w.out[start-1] != '{' {
		w.out = append(w.out, ',')
		start++
	}
	w.out = appendString(w.out, key)
	w.out = append(w.out, ':')
	next, ok := w.value(i, fp, fdst)
	w.enc = append(w.enc, encoded{key, start, len(w.out)})
	return next, ok
}

// foldsToDeclared reports whether an undeclared key names a declared field in
// other letter case (encoding/json would decode it into that field). Non-ASCII
// keys count as such, so that Unicode folding is left to the reference.
func foldsToDeclared(p *plan, key string) bool {
	var buf [64]byte
	if len(key) > len(buf) {
		return false // longer than any declared name
	}
	for i := range len(key) {
		c := key[i]
		if c >= utf8.RuneSelf {
			return true
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return p.folded[string(buf[:len(key)])]
}

// sortMembers puts the members written since open (w.enc[first:]) in key
// order, as encoding/json writes a map, and reports false for a key given
// twice.
func (w *walker) sortMembers(open, first int) bool {
	ms := w.enc[first:]
	sorted := true
	for k := 1; k < len(ms); k++ {
		switch c := strings.Compare(ms[k-1].key, ms[k].key); {
		case c == 0:
			return false
		case c > 0:
			sorted = false
		}
	}
	if sorted {
		return true
	}
	slices.SortFunc(ms, func(a, b encoded) int { return strings.Compare(a.key, b.key) })
	for k := 1; k < len(ms); k++ {
		if ms[k-1].key == ms[k].key {
			return false
		}
	}
	w.tmp = append(w.tmp[:0], w.out[open:]...)
	w.out = w.out[:open]
	for k, m := range ms {
		if k > 0 {
			w.out = append(w.out, ',')
		}
		w.out = append(w.out, w.tmp[m.start-open:m.end-open]...)
	}
	return true
}

// array walks the array at in[i] with plan p (kindSlice or anyPlan) into dst.
func (w *walker) array(i int, p *plan, dst reflect.Value) (int, bool) {
	if w.depth++; w.depth > MaxDepth {
		return 0, false
	}
	ep := anyPlan
	if p.kind == kindSlice {
		ep = p.elem
		dst.Set(reflect.MakeSlice(p.typ, 0, 0)) // [] decodes to an empty slice, not nil
	}
	w.out = append(w.out, '[')
	i = w.space(i + 1)
	if i < len(w.in) && w.in[i] == ']' {
		w.out = append(w.out, ']')
		w.depth--
		return i + 1, true
	}
	for n := 0; ; n++ {
		if n > 0 {
			w.out = append(w.out, ',')
		}
		var ok bool
		if p.kind == kindSlice {
			dst.Set(reflect.Append(dst, reflect.Zero(p.elem.typ)))
			i, ok = w.value(i, ep, dst.Index(n))
		} else {
			i, ok = w.value(i, ep, reflect.Value{})
		}
		if !ok {
			return 0, false
		}
		i = w.space(i)
		if i >= len(w.in) {
			return 0, false
		}
		switch w.in[i] {
		case ',':
			i = w.space(i + 1)
		case ']':
			w.out = append(w.out, ']')
			w.depth--
			return i + 1, true
		default:
			return 0, false
		}
	}
}

// string reads the string at in[i] and returns its value and the offset
// after it. Without escapes the value is a substring of w.str; with them it
// is decoded as encoding/json does.
func (w *walker) string(i int) (string, int, bool) {
	start := i + 1
	j := start
	for j < len(w.in) && plainByte[w.in[j]] {
		j++
	}
	if j < len(w.in) && w.in[j] == '"' {
		return w.str[start:j], j + 1, true
	}
	for ; j < len(w.in); j++ {
		switch c := w.in[j]; {
		case c == '"':
			return w.str[start:j], j + 1, true
		case c < 0x20:
			return "", 0, false
		case c == '\\':
			return w.escaped(i)
		}
	}
	return "", 0, false
}

// escaped decodes a string with backslash escapes, with encoding/json's
// rules for invalid surrogates.
func (w *walker) escaped(i int) (string, int, bool) {
	var b []byte
	for j := i + 1; j < len(w.in); {
		c := w.in[j]
		switch {
		case c == '"':
			return string(b), j + 1, true
		case c < 0x20:
			return "", 0, false
		case c != '\\':
			b = append(b, c)
			j++
			continue
		}
		if j+1 >= len(w.in) {
			return "", 0, false
		}
		switch e := w.in[j+1]; e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r := hex4(w.in[j+2:])
			if r < 0 {
				return "", 0, false
			}
			j += 6
			if utf16IsSurrogate(r) {
				if dec, ok := surrogatePair(r, w.in[j:]); ok {
					b = utf8.AppendRune(b, dec)
					j += 6
					continue
				}
				r = utf8.RuneError
			}
			b = utf8.AppendRune(b, r)
			continue
		default:
			return "", 0, false
		}
		j += 2
	}
	return "", 0, false
}

// hex4 reads the four hex digits at the start of b, or returns -1.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

func utf16IsSurrogate(r rune) bool { return 0xd800 <= r && r < 0xe000 }

// surrogatePair completes the high surrogate r with the `\uXXXX` low
// surrogate at the start of b, if there is one.
func surrogatePair(r rune, b []byte) (rune, bool) {
	if r >= 0xdc00 || len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return 0, false
	}
	r2 := hex4(b[2:])
	if r2 < 0xdc00 || r2 >= 0xe000 {
		return 0, false
	}
	return (r-0xd800)<<10 | (r2 - 0xdc00) + 0x10000, true
}

// number reads the number at in[i] with JSON's grammar and returns the
// offset after it.
func (w *walker) number(i int) (int, bool) {
	in := w.in
	if i < len(in) && in[i] == '-' {
		i++
	}
	switch {
	case i < len(in) && in[i] == '0':
		i++
	case i < len(in) && '1' <= in[i] && in[i] <= '9':
		for i < len(in) && '0' <= in[i] && in[i] <= '9' {
			i++
		}
	default:
		return 0, false
	}
	if i < len(in) && in[i] == '.' {
		i++
		if i >= len(in) || in[i] < '0' || in[i] > '9' {
			return 0, false
		}
		for i < len(in) && '0' <= in[i] && in[i] <= '9' {
			i++
		}
	}
	if i < len(in) && (in[i] == 'e' || in[i] == 'E') {
		i++
		if i < len(in) && (in[i] == '+' || in[i] == '-') {
			i++
		}
		if i >= len(in) || in[i] < '0' || in[i] > '9' {
			return 0, false
		}
		for i < len(in) && '0' <= in[i] && in[i] <= '9' {
			i++
		}
	}
	return i, true
}

func (w *walker) space(i int) int {
	for i < len(w.in) {
		switch w.in[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// plainByte holds the bytes a string may contain unescaped that need no
// further look: ASCII from space on, except '"' and '\\'.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// hasLineSeparator reports whether b holds U+2028 or U+2029 (E2 80 A8,
// E2 80 A9), which encoding/json escapes.
func hasLineSeparator(b []byte) bool {
	for {
		k := bytes.IndexByte(b, 0xe2)
		if k < 0 || k+2 >= len(b) {
			return false
		}
		if b[k+1] == 0x80 && (b[k+2] == 0xa8 || b[k+2] == 0xa9) {
			return true
		}
		b = b[k+1:]
	}
}

// appendString appends s as a JSON string exactly as encoding/json does
// without HTML escaping (marshalData's setting).
func appendString(dst []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if plainByte[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// items reads the array at in[i], calling each with the offset of every
// item; each returns the offset after the item. It returns the offset after
// the array.
func (w *walker) items(i int, each func(item int) (int, bool)) (int, bool) {
	i = w.space(i + 1)
	if i < len(w.in) && w.in[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = each(i); !ok {
			return 0, false
		}
		i = w.space(i)
		if i >= len(w.in) {
			return 0, false
		}
		switch w.in[i] {
		case ',':
			i = w.space(i + 1)
		case ']':
			return i + 1, true
		default:
			return 0, false
		}
	}
}

// skip walks the value at in[i] as an undeclared field, only to find its
// end.
func (w *walker) skip(i int) (int, bool) { return w.value(i, anyPlan, reflect.Value{}) }
