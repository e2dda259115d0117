package wechatsim

import (
	"crypto/rand"
	"regexp"
	"strings"
	"time"
)

// businessIDFields name the fields that identify a business fact (the dedupe keys' parts and their
// companions). Fresh gives them new values so that each simulated notification is a new fact.
var businessIDFields = []string{
	"transaction_id", "id", "out_trade_no", "combine_out_trade_no", "refund_id", "out_refund_no", "record_id", "parking_id", "out_parking_no",
}

// businessTimeFields are the times that become an event's time; Fresh sets them to now.
var businessTimeFields = []string{"success_time", "punish_time", "state_update_time"}

var (
	idFieldRe   = fieldPattern(businessIDFields)
	timeFieldRe = fieldPattern(businessTimeFields)
	mchidRe     = fieldPattern([]string{"mchid", "sp_mchid", "combine_mchid"})
)

// fieldPattern matches `"name": "value"` for the given names, capturing the prefix, the value and the
// closing quote, so that a replacement keeps the document's layout byte for byte elsewhere.
func fieldPattern(names []string) *regexp.Regexp {
	return regexp.MustCompile(`("(?:` + strings.Join(names, "|") + `)"\s*:\s*")([^"\\]*)(")`)
}

// Fresh returns a copy of a sample plaintext that describes a new business fact: every business id
// (transaction_id, refund_id, record_id, parking_id, out_trade_no, …) gets a new random value of the same
// shape (its first two characters kept, digits replaced by digits and letters by letters; one value
// used twice in the document stays equal), the business times (success_time, punish_time,
// state_update_time) become now in Beijing time, and the merchant fields that name the account the
// notification is sent to — a direct merchant's "mchid", a service provider's "sp_mchid", a combined
// payment's "combine_mchid" (and its sub-orders' "mchid") — become mchid (when not empty); sub-merchants
// stay. Everything else, including the layout, is kept.
func Fresh(plaintext []byte, mchid string, now time.Time) []byte {
	seen := map[string]string{}
	out := idFieldRe.ReplaceAllFunc(plaintext, func(m []byte) []byte {
		sub := idFieldRe.FindSubmatch(m)
		old := string(sub[2])
		v, ok := seen[old]
		if !ok {
			v = reshape(old)
			seen[old] = v
		}
		return concat(sub[1], []byte(v), sub[3])
	})
	out = timeFieldRe.ReplaceAllFunc(out, func(m []byte) []byte {
		sub := timeFieldRe.FindSubmatch(m)
		layout := "2006-01-02T15:04:05Z07:00"
		if strings.Contains(string(sub[2]), ".") {
			layout = "2006-01-02T15:04:05.000Z07:00"
		}
		return concat(sub[1], []byte(now.In(beijing).Format(layout)), sub[3])
	})
	if mchid != "" {
		out = mchidRe.ReplaceAllFunc(out, func(m []byte) []byte {
			sub := mchidRe.FindSubmatch(m)
			return concat(sub[1], []byte(mchid), sub[3])
		})
	}
	return out
}

// reshape returns a random value shaped like v.
func reshape(v string) string {
	const keep = 2
	b := []byte(v)
	r := make([]byte, len(b))
	if _, err := rand.Read(r); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	for i := range b {
		if i < keep && len(b) > keep+4 {
			continue
		}
		switch c := b[i]; {
		case '0' <= c && c <= '9':
			b[i] = '0' + r[i]%10
		case 'A' <= c && c <= 'Z':
			b[i] = 'A' + r[i]%26
		case 'a' <= c && c <= 'z':
			b[i] = 'a' + r[i]%26
		}
	}
	return string(b)
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
