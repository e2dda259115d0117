package events

import (
	"crypto/sha1" //nolint:gosec // UUIDv5 is defined over SHA-1; ids, not security
	"encoding/hex"
	"strings"
	"time"
)

// maxKeyPart bounds each field that goes into a dedupe key. WeChat Pay ids
// are at most 32 characters; the margin is for escaping.
const maxKeyPart = 128

// required returns value, or ErrMalformed naming field when it is empty or
// too long to be a key part.
func required(field, value string) (string, error) {
	switch {
	case value == "":
		return "", fieldError(field, "required")
	case len(value) > maxKeyPart:
		return "", fieldError(field, "longer than 128 bytes")
	}
	return value, nil
}

// dedupeKey joins "<mchid>:<type>:<part>…" with ':'. Parts are escaped so the
// key is one printable token and the ':' separators stay unambiguous: ASCII
// letters, digits, '.', '_' and '-' are kept and every other byte is written
// as %XX.
func dedupeKey(mchid, typ string, parts []string) string {
	var b strings.Builder
	b.WriteString(mchid)
	b.WriteByte(':')
	b.WriteString(typ)
	for _, p := range parts {
		b.WriteByte(':')
		for i := 0; i < len(p); i++ {
			c := p[i]
			if keyByte(c) {
				b.WriteByte(c)
				continue
			}
			const hexDigits = "0123456789ABCDEF"
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0x0f])
		}
	}
	return b.String()
}

func keyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
}

// keyTime renders a key time canonically, whatever offset or precision it was
// sent with: UTC, no separators that need escaping, trailing zeros of the
// fraction dropped ("20150520T052935.12Z"). The zero time (an absent field)
// gives "".
func keyTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("20060102T150405.999999999Z")
}

// nameSpaceURL is the RFC 9562 namespace for URL names.
var nameSpaceURL = [16]byte{0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}

// eventNamespace is the namespace of event ids: the UUIDv5 of this module's
// URL in the URL namespace.
var eventNamespace = uuidV5Bytes(nameSpaceURL, "https://github.com/wxpay-events/wxpay-events")

// eventID is the UUIDv5 of the dedupe key (which starts with the merchant
// and the domain type) in eventNamespace.
func eventID(dedupeKey string) string {
	return formatUUID(uuidV5Bytes(eventNamespace, dedupeKey))
}

// uuidV5Bytes is RFC 9562 §5.5: SHA-1 over namespace and name, with version
// 5 and the RFC variant set.
func uuidV5Bytes(ns [16]byte, name string) [16]byte {
	h := sha1.New() //nolint:gosec // UUIDv5 (RFC 9562 §5.5) is SHA-1 by definition
	h.Write(ns[:])
	h.Write([]byte(name))
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	return u
}

func formatUUID(u [16]byte) string {
	var buf [36]byte
	hex.Encode(buf[0:8], u[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], u[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], u[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], u[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:], u[10:])
	return string(buf[:])
}
