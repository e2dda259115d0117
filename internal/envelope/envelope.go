// Package envelope parses the outer JSON of a WeChat Pay APIv3 notification: its id, event type, creation
// time and the still-encrypted resource. It checks only what the pipeline relies on: an id that can name
// a message and an event type that can name a NATS subject. It never needs, and never sees, a key.
package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrMalformed reports a body that is not a usable notification envelope. It is permanent: retrying the
// same bytes cannot help.
var ErrMalformed = errors.New("envelope: malformed notification")

// Limits on the fields that become parts of NATS subjects and message ids.
const (
	MaxIDLength        = 64
	MaxEventTypeLength = 64
)

// Envelope is the outer notification as WeChat Pay sends it. CreateTime stays a string: official samples
// use values that are not RFC 3339 ("20180225112233"), and the receiver must not refuse them.
type Envelope struct {
	ID           string   `json:"id"`
	CreateTime   string   `json:"create_time"`
	EventType    string   `json:"event_type"`
	ResourceType string   `json:"resource_type"`
	Summary      string   `json:"summary"`
	Resource     Resource `json:"resource"`
}

// Resource is the encrypted part of a notification.
type Resource struct {
	OriginalType   string `json:"original_type"`
	Algorithm      string `json:"algorithm"`
	Ciphertext     string `json:"ciphertext"`
	AssociatedData string `json:"associated_data"`
	Nonce          string `json:"nonce"`
}

// Parse decodes body and checks id and event_type, and that the resource is there to decrypt (an
// object with algorithm, ciphertext and nonce). Keys are matched exactly, as the consumer matches the
// plaintext's: a key that differs from a known one only in letter case ("EVENT_TYPE", "ID"), or a known key
// given twice, is malformed, because encoding/json would read either silently and so let bytes that were
// not the verified field pick the subject and message id. Errors wrap ErrMalformed and name the field, never
// echoing the body.
//
// Envelopes as WeChat Pay sends them (string members only, no escapes, one resource object) are read by a
// single scan (see scan.go); anything else, including every malformed body, goes through parseReference,
// which defines the behaviour: the scan only accepts what parseReference would decode to the same Envelope.
func Parse(body []byte) (Envelope, error) {
	e, ok := scan(body)
	if !ok {
		return parseReference(body)
	}
	if err := checkTokens(e); err != nil {
		return Envelope{}, err
	}
	if err := checkResource(e.Resource); err != nil {
		return Envelope{}, err
	}
	return e, nil
}

// parseReference is Parse through encoding/json: slower, but it handles every body (escapes, nulls, nested
// unknown members) and words every error.
func parseReference(body []byte) (Envelope, error) {
	var e Envelope
	var resource json.RawMessage
	err := decodeObject(body, "", map[string]any{
		"id": &e.ID, "create_time": &e.CreateTime, "event_type": &e.EventType,
		"resource_type": &e.ResourceType, "summary": &e.Summary, "resource": &resource,
	})
	if err != nil {
		return Envelope{}, err
	}
	if err := checkTokens(e); err != nil {
		return Envelope{}, err
	}
	if len(resource) == 0 || string(resource) == "null" {
		return Envelope{}, fmt.Errorf("%w: resource is missing", ErrMalformed)
	}
	r := &e.Resource
	if err := decodeObject(resource, "resource.", map[string]any{
		"original_type": &r.OriginalType, "algorithm": &r.Algorithm, "ciphertext": &r.Ciphertext,
		"associated_data": &r.AssociatedData, "nonce": &r.Nonce,
	}); err != nil {
		return Envelope{}, err
	}
	if err := checkResource(*r); err != nil {
		return Envelope{}, err
	}
	return e, nil
}

// checkTokens checks the fields that become parts of NATS subjects and message ids.
func checkTokens(e Envelope) error {
	if err := checkToken("id", e.ID, MaxIDLength); err != nil {
		return err
	}
	if err := checkToken("event_type", e.EventType, MaxEventTypeLength); err != nil {
		return err
	}
	if strings.HasPrefix(e.EventType, ".") || strings.HasSuffix(e.EventType, ".") || strings.Contains(e.EventType, "..") {
		return fmt.Errorf("%w: event_type has an empty dot-separated part", ErrMalformed)
	}
	return nil
}

// checkResource checks that the resource names what decryption needs.
func checkResource(r Resource) error {
	switch {
	case r.Algorithm == "":
		return fmt.Errorf("%w: resource.algorithm is missing", ErrMalformed)
	case r.Ciphertext == "":
		return fmt.Errorf("%w: resource.ciphertext is missing", ErrMalformed)
	case r.Nonce == "":
		return fmt.Errorf("%w: resource.nonce is missing", ErrMalformed)
	}
	return nil
}

// decodeObject decodes one JSON object into fields (JSON name → pointer), matching names exactly: a key
// that equals a field's name only without regard to letter case, or a field given twice, is an error;
// other keys are ignored. A null value leaves its field as it is. prefix qualifies names in errors.
func decodeObject(data []byte, prefix string, fields map[string]any) error {
	var members map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&members); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return fmt.Errorf("%w: invalid JSON at offset %d", ErrMalformed, se.Offset)
		case errors.As(err, &te):
			return fmt.Errorf("%w: %s is not a JSON object", ErrMalformed, strings.TrimSuffix(prefix, ".")+orBody(prefix))
		default:
			return fmt.Errorf("%w: not a JSON object", ErrMalformed)
		}
	}
	if members == nil {
		return fmt.Errorf("%w: %s is not a JSON object", ErrMalformed, strings.TrimSuffix(prefix, ".")+orBody(prefix))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	for key, raw := range members {
		dst, known := fields[key]
		if !known {
			for name := range fields {
				if strings.EqualFold(key, name) {
					return fmt.Errorf("%w: %s%s is also present with different letter case", ErrMalformed, prefix, name)
				}
			}
			continue
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return fmt.Errorf("%w: field %q has the wrong type", ErrMalformed, prefix+key)
		}
	}
	return duplicateKeys(data, prefix, fields)
}

func orBody(prefix string) string {
	if prefix == "" {
		return "the body"
	}
	return ""
}

// duplicateKeys reports a known key that appears twice at the top level of the object data (encoding/json
// keeps the last one without a word).
func duplicateKeys(data []byte, prefix string, fields map[string]any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // '{'
		return fmt.Errorf("%w: invalid JSON", ErrMalformed)
	}
	seen := make(map[string]bool, len(fields))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: invalid JSON", ErrMalformed)
		}
		key, _ := tok.(string)
		if _, known := fields[key]; known {
			if seen[key] {
				return fmt.Errorf("%w: %s%s appears twice", ErrMalformed, prefix, key)
			}
			seen[key] = true
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return fmt.Errorf("%w: invalid JSON", ErrMalformed)
		}
	}
	return nil
}

// SubjectToken is the event type as it appears in inbound subjects: lower-cased, its dots kept
// ("TRANSACTION.SUCCESS" → "transaction.success").
func (e Envelope) SubjectToken() string { return strings.ToLower(e.EventType) }

func checkToken(field, v string, limit int) error {
	if v == "" {
		return fmt.Errorf("%w: %s is missing", ErrMalformed, field)
	}
	if len(v) > limit {
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrMalformed, field, limit)
	}
	for _, r := range v {
		if !isTokenChar(r) {
			return fmt.Errorf("%w: %s has a character outside [A-Za-z0-9._-]", ErrMalformed, field)
		}
	}
	return nil
}

// Ids are UUIDs in practice and event types dotted upper-case words; the accepted set is wider than both but
// excludes everything that could break a NATS header or subject (spaces, control characters, '*', '>').
func isTokenChar(r rune) bool { return r < 0x80 && TokenByte(byte(r)) }

// TokenByte reports whether c may appear in an id or event type: ASCII letters, digits, '.', '_' and '-'.
// It is the one definition the receiver's fast path shares.
func TokenByte(c byte) bool {
	return c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
