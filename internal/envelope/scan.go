package envelope

import "unicode/utf8"

// scan reads an envelope in the shape WeChat Pay sends: one object whose members are strings, except
// resource, an object whose members are strings too. It reports false, and Parse falls back to
// parseReference, for anything else: invalid JSON, a string with a backslash escape, invalid UTF-8 or a
// control character, a member of another JSON type (null included), a known key given twice or in another
// letter case, a missing resource, or data after the object. So whatever scan accepts, encoding/json reads
// the same way and parseReference's duplicate and letter-case checks pass: the two agree on every body
// scan accepts (FuzzScanMatchesReference checks it).
//
// All fields are substrings of one copy of the body, so a parse allocates once.
func scan(body []byte) (Envelope, bool) {
	var top [len(topFields)]span
	var res [len(resourceFields)]span
	p, ok := scanObject(body, skipSpace(body, 0), topFields[:], top[:], &res)
	if !ok || skipSpace(body, p) != len(body) || top[fieldResource].end == 0 {
		return Envelope{}, false
	}
	s := string(body)
	sub := func(sp span) string { return s[sp.start:sp.end] }
	return Envelope{
		ID:           sub(top[0]),
		CreateTime:   sub(top[1]),
		EventType:    sub(top[2]),
		ResourceType: sub(top[3]),
		Summary:      sub(top[4]),
		Resource: Resource{
			OriginalType:   sub(res[0]),
			Algorithm:      sub(res[1]),
			Ciphertext:     sub(res[2]),
			AssociatedData: sub(res[3]),
			Nonce:          sub(res[4]),
		},
	}, true
}

// The keys scan knows, in the order of the Envelope and Resource fields they fill. resource is the one
// member whose value is an object.
var (
	topFields      = [...]string{"id", "create_time", "event_type", "resource_type", "summary", "resource"}
	resourceFields = [...]string{"original_type", "algorithm", "ciphertext", "associated_data", "nonce"}
)

const fieldResource = 5

// span is a string's contents in the body, between its quotes. A member seen has end > 0 (a string's
// contents cannot end at offset 0).
type span struct{ start, end int }

// scanObject reads the object at body[p:], recording the contents of the string members named in fields
// into found (same index). When res is not nil, the member "resource" must be an object, scanned into res
// with resourceFields. It returns the offset after the object.
func scanObject(body []byte, p int, fields []string, found []span, res *[len(resourceFields)]span) (int, bool) {
	if p >= len(body) || body[p] != '{' {
		return 0, false
	}
	p = skipSpace(body, p+1)
	if p < len(body) && body[p] == '}' {
		return p + 1, true
	}
	for {
		key, next, ok := scanString(body, p)
		if !ok {
			return 0, false
		}
		p = skipSpace(body, next)
		if p >= len(body) || body[p] != ':' {
			return 0, false
		}
		p = skipSpace(body, p+1)
		i := fieldIndex(fields, body[key.start:key.end])
		switch {
		case i < 0: // an unknown key, unless it is a known one in other letter case
			if foldsToField(fields, body[key.start:key.end]) {
				return 0, false
			}
			if _, p, ok = scanString(body, p); !ok {
				return 0, false
			}
		case found[i].end != 0: // a known key given twice
			return 0, false
		case res != nil && i == fieldResource:
			end, ok := scanObject(body, p, resourceFields[:], res[:], nil)
			if !ok {
				return 0, false
			}
			found[i] = span{p, end} // marks resource as seen
			p = end
		default:
			if found[i], p, ok = scanString(body, p); !ok {
				return 0, false
			}
		}
		p = skipSpace(body, p)
		if p >= len(body) {
			return 0, false
		}
		switch body[p] {
		case ',':
			p = skipSpace(body, p+1)
		case '}':
			return p + 1, true
		default:
			return 0, false
		}
	}
}

// scanString reads a string at body[p:] with no backslash and no control character, in valid UTF-8.
// It returns the span of its contents and the offset after the closing quote.
func scanString(body []byte, p int) (span, int, bool) {
	if p >= len(body) || body[p] != '"' {
		return span{}, 0, false
	}
	start := p + 1
	i := start
	for i < len(body) && plainASCII[body[i]] {
		i++
	}
	if i < len(body) && body[i] == '"' { // the common case: ASCII only
		return span{start, i}, i + 1, true
	}
	for ; i < len(body); i++ {
		switch c := body[i]; {
		case c == '"':
			if !utf8.Valid(body[start:i]) {
				return span{}, 0, false
			}
			return span{start, i}, i + 1, true
		case c == '\\' || c < 0x20:
			return span{}, 0, false
		}
	}
	return span{}, 0, false
}

// plainASCII holds the bytes a string may contain as they are and that are valid UTF-8 on their own:
// ASCII from space on, except '"' and '\\'.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func fieldIndex(fields []string, key []byte) int {
	for i, f := range fields {
		if f == string(key) {
			return i
		}
	}
	return -1
}

// foldsToField reports whether key names one of fields in other letter case. A key with non-ASCII bytes
// counts as a match, so that such keys (which could fold to ASCII, like the Kelvin sign to 'k') are left
// to parseReference.
func foldsToField(fields []string, key []byte) bool {
	for _, c := range key {
		if c >= utf8.RuneSelf {
			return true
		}
	}
	for _, f := range fields {
		if len(f) == len(key) && asciiEqualFold(f, key) {
			return true
		}
	}
	return false
}

func asciiEqualFold(s string, b []byte) bool {
	for i := range len(s) {
		if lower(s[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func skipSpace(body []byte, p int) int {
	for p < len(body) {
		switch body[p] {
		case ' ', '\t', '\n', '\r':
			p++
		default:
			return p
		}
	}
	return p
}
