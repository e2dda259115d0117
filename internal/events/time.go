package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// beijing is the zone WeChat Pay means when a sample time has no offset. It is
// fixed at +08:00 rather than loaded from tzdata: China has kept no daylight
// saving time since 1991, and WeChat Pay never applied any.
var beijing = time.FixedZone("CST", 8*60*60)

// timeLayouts are tried in order. Go accepts a fractional second after the
// seconds field even where a layout does not show one.
var timeLayouts = []struct {
	layout string
	loc    *time.Location // for layouts without an offset
}{
	{time.RFC3339, time.UTC},               // 2015-05-20T13:29:35+08:00, …35.120+08:00, …Z
	{"2006-01-02T15:04:05Z0700", time.UTC}, // offset without a colon
	{"20060102150405", beijing},            // 20180225112233 (violation and education doc samples)
	{"2006-01-02T15:04:05", beijing},
	{"2006-01-02 15:04:05", beijing},
}

// Time is a WeChat Pay timestamp normalised to RFC 3339. It keeps the offset
// and the number of fractional-second digits it was given, so
// "2015-05-20T13:29:35.120+08:00" stays exactly that, and "20180225112233"
// (Beijing time) becomes "2018-02-25T11:22:33+08:00". The zero Time marshals
// as null.
type Time struct {
	t    time.Time
	frac int  // fractional-second digits to print
	set  bool // false for the zero Time, so that 0001-01-01T00:00:00Z is still a value
}

// ParseTime parses the time formats found in WeChat Pay notifications and
// their official samples: RFC 3339 with or without fractional seconds (also
// with a colon-less offset), and yyyyMMddHHmmss, yyyy-MM-ddTHH:mm:ss or
// yyyy-MM-dd HH:mm:ss without an offset, read as Beijing time (+08:00).
// Anything else is ErrMalformed.
func ParseTime(s string) (Time, error) {
	u := strings.ToUpper(s) // RFC 3339 allows "t" and "z"; Go's parser wants them upper case
	for _, l := range timeLayouts {
		t, err := time.ParseInLocation(l.layout, u, l.loc)
		if err != nil {
			continue
		}
		if _, off := t.Zone(); off <= -24*60*60 || off >= 24*60*60 {
			break // RFC 3339 offsets are at most ±23:59
		}
		if y := t.Year(); y < 1 || y > 9999 {
			break
		}
		return Time{t: t, frac: fracDigits(u), set: true}, nil
	}
	return Time{}, fmt.Errorf("%w: unrecognised time format", ErrMalformed)
}

// fracDigits counts the digits of the fractional second in a time that
// parsed, i.e. those after the first '.' or ',' (up to 9, Go's precision).
func fracDigits(s string) int {
	i := strings.IndexAny(s, ".,")
	if i < 0 {
		return 0
	}
	n := 0
	for _, c := range s[i+1:] {
		if c < '0' || c > '9' {
			break
		}
		n++
	}
	return min(n, 9)
}

// Time returns the instant, in the offset it was given.
func (t Time) Time() time.Time { return t.t }

// IsZero reports whether t is the zero Time (an absent or null field).
func (t Time) IsZero() bool { return !t.set }

// String formats t as RFC 3339 with its original offset and number of
// fractional-second digits; the zero Time gives "".
func (t Time) String() string {
	if t.IsZero() {
		return ""
	}
	layout := "2006-01-02T15:04:05Z07:00"
	if t.frac > 0 {
		layout = "2006-01-02T15:04:05." + strings.Repeat("0", t.frac) + "Z07:00"
	}
	return t.t.Format(layout)
}

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.String())
}

// UnmarshalJSON implements json.Unmarshaler; it accepts null and every format
// ParseTime does.
func (t *Time) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*t = Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%w: time is not a string", ErrMalformed)
	}
	p, err := ParseTime(s)
	if err != nil {
		return err
	}
	*t = p
	return nil
}
