// Package envelope parses the outer JSON of a WeChat Pay APIv3 notification: its id, event type, creation
// time and the still-encrypted resource. It checks only what the pipeline relies on: an id that can name
// a message and an event type that can name a NATS subject. It never needs, and never sees, a key.
package envelope

import (
	"encoding/json"
	"errors"
	"fmt"
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

// Parse decodes body and checks id and event_type. Errors wrap ErrMalformed and name the field, never
// echoing the body.
func Parse(body []byte) (Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(body, &e); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return Envelope{}, fmt.Errorf("%w: invalid JSON at offset %d", ErrMalformed, se.Offset)
		case errors.As(err, &te):
			return Envelope{}, fmt.Errorf("%w: field %q has the wrong type", ErrMalformed, te.Field)
		default:
			return Envelope{}, fmt.Errorf("%w: not a JSON object", ErrMalformed)
		}
	}
	if err := checkToken("id", e.ID, MaxIDLength); err != nil {
		return Envelope{}, err
	}
	if err := checkToken("event_type", e.EventType, MaxEventTypeLength); err != nil {
		return Envelope{}, err
	}
	if strings.HasPrefix(e.EventType, ".") || strings.HasSuffix(e.EventType, ".") || strings.Contains(e.EventType, "..") {
		return Envelope{}, fmt.Errorf("%w: event_type has an empty dot-separated part", ErrMalformed)
	}
	return e, nil
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
func isTokenChar(r rune) bool {
	return r < 0x80 && (r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
}
