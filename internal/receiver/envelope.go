package receiver

import "github.com/wxpay-events/wxpay-events/internal/envelope"

// parseEnvelope returns what the receiver needs of a notification's envelope: its id and event type.
//
// envelope.Parse decodes the whole body with encoding/json, most of it the resource's ciphertext, and was
// the receiver's largest cost after the signature check (a third of it; see BENCHMARKS.md). The receiver
// needs two short fields, so a single pass over the canonical shape WeChat Pay sends finds them; any other
// input, valid or not, goes to envelope.Parse, which therefore decides every error and every unusual case.
// The fast path accepts a body only if envelope.Parse would accept it with the same id and event type
// (FuzzParseEnvelope checks this).
func parseEnvelope(body []byte) (envelope.Envelope, error) {
	if id, eventType, ok := scanEnvelope(body); ok {
		return envelope.Envelope{ID: id, EventType: eventType}, nil
	}
	return envelope.Parse(body)
}

// envelopeFields are the envelope's keys; "resource" holds an object of resourceFields. Every value is a
// string, which is what envelope.Envelope declares.
var (
	envelopeFields = []string{"id", "create_time", "event_type", "resource_type", "summary", "resource"}
	resourceFields = []string{"original_type", "algorithm", "ciphertext", "associated_data", "nonce"}
)

// scanEnvelope reads body as an envelope of the canonical shape: one JSON object holding only the known
// keys, spelt exactly, each at most once, with string values (an object for "resource", with the same
// rules, holding a non-empty algorithm, ciphertext and nonce); id and event_type present, free of escapes
// and within envelope.Parse's checks. It reports
// ok=false for anything else, valid JSON included.
func scanEnvelope(body []byte) (id, eventType string, ok bool) {
	s := scanner{b: body}
	var rawID, rawType []byte
	var seen [6]bool
	resourceFilled := 0 // how many of algorithm, ciphertext and nonce are present and not empty
	if !s.object(func(key []byte) bool {
		i := indexOf(envelopeFields, key)
		if i < 0 || seen[i] {
			return false
		}
		seen[i] = true
		switch envelopeFields[i] {
		case "resource":
			var rseen [5]bool
			return s.object(func(key []byte) bool {
				j := indexOf(resourceFields, key)
				if j < 0 || rseen[j] {
					return false
				}
				rseen[j] = true
				v, ok := s.str()
				switch resourceFields[j] {
				case "algorithm", "ciphertext", "nonce":
					if len(v) > 0 {
						resourceFilled++
					}
				}
				return ok
			})
		case "id":
			v, ok := s.str()
			rawID = v
			return ok
		case "event_type":
			v, ok := s.str()
			rawType = v
			return ok
		default:
			_, ok := s.str()
			return ok
		}
	}) {
		return "", "", false
	}
	s.space()
	if s.i != len(s.b) {
		return "", "", false
	}
	if !plainToken(rawID, envelope.MaxIDLength) || !plainToken(rawType, envelope.MaxEventTypeLength) {
		return "", "", false
	}
	if rawType[0] == '.' || rawType[len(rawType)-1] == '.' || containsDoubleDot(rawType) {
		return "", "", false
	}
	if resourceFilled != 3 {
		return "", "", false // envelope.Parse names what the resource lacks
	}
	return string(rawID), string(rawType), true
}

// plainToken reports whether v passes envelope's token check as it stands in the body: present, not too
// long, only [A-Za-z0-9._-] (which also rules out escapes, so the raw bytes are the decoded value).
func plainToken(v []byte, limit int) bool {
	if len(v) == 0 || len(v) > limit {
		return false
	}
	for _, c := range v {
		if !envelope.TokenByte(c) {
			return false
		}
	}
	return true
}

func hexByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func containsDoubleDot(v []byte) bool {
	for i := 1; i < len(v); i++ {
		if v[i] == '.' && v[i-1] == '.' {
			return true
		}
	}
	return false
}

func indexOf(names []string, key []byte) int {
	for i, n := range names {
		if string(key) == n {
			return i
		}
	}
	return -1
}

// scanner walks JSON of the canonical shape; every method reports false on anything it does not expect.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// object reads {"key": value, …}, calling member after each key and its colon to read the value.
func (s *scanner) object(member func(key []byte) bool) bool {
	s.space()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return false
	}
	s.i++
	s.space()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return true
	}
	for {
		s.space()
		key, ok := s.str()
		if !ok || !plainKey(key) {
			return false
		}
		s.space()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		s.space()
		if !member(key) {
			return false
		}
		s.space()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// plainKey reports whether a key's raw bytes are its name: no escapes (the known names have none).
func plainKey(k []byte) bool {
	for _, c := range k {
		if c == '\\' {
			return false
		}
	}
	return true
}

// str reads a JSON string and returns its raw contents, escapes not decoded. It accepts what
// encoding/json accepts: any byte but '"', '\\' and control characters, and the JSON escapes (encoding/json
// does not reject invalid UTF-8, it replaces it in the decoded value; only id and event_type are used,
// and plainToken admits neither escapes nor non-ASCII bytes in those).
func (s *scanner) str() ([]byte, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	s.i++
	start := s.i
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c == '"':
			v := s.b[start:s.i]
			s.i++
			return v, true
		case c == '\\':
			if !s.escape() {
				return nil, false
			}
		case c < 0x20:
			return nil, false
		default:
			s.i++
		}
	}
	return nil, false
}

// escape reads one escape sequence at s.i (the backslash).
func (s *scanner) escape() bool {
	if s.i+1 >= len(s.b) {
		return false
	}
	switch s.b[s.i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.i += 2
		return true
	case 'u':
		if s.i+6 > len(s.b) {
			return false
		}
		for _, c := range s.b[s.i+2 : s.i+6] {
			if !hexByte(c) {
				return false
			}
		}
		s.i += 6
		return true
	}
	return false
}
