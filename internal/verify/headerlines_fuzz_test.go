package verify_test

import (
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/wxpay-events/wxpay-events/internal/verify"
)

// FuzzParseHeaderLines feeds arbitrary captured header files to the parser behind `wxpayctl verify`: it
// must never panic, must fail only with ErrHeaderLines, and what it accepts must be well-formed and read
// back the same once written out again as "Name: value" lines.
func FuzzParseHeaderLines(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nWechatpay-Timestamp: 1624523846\r\nWechatpay-Nonce: abc\r\n\r\n"))
	f.Add([]byte("POST /notify/1900000100 HTTP/1.1\nHost: x\nWechatpay-Serial: PUB_KEY_ID_0001\n"))
	f.Add([]byte("not a header line\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := verify.ParseHeaderLines(data)
		if err != nil {
			if h != nil {
				t.Fatalf("headers returned with error %v", err)
			}
			if !errors.Is(err, verify.ErrHeaderLines) {
				t.Fatalf("error %v does not wrap ErrHeaderLines", err)
			}
			return
		}
		names := make([]string, 0, len(h))
		for name, values := range h {
			if name == "" || strings.ContainsAny(name, " \t\n:") {
				t.Fatalf("accepted header name %q", name)
			}
			for _, v := range values {
				if v != strings.TrimSpace(v) || strings.Contains(v, "\n") {
					t.Fatalf("value %q of %s is not trimmed to one line", v, name)
				}
			}
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			if !isToken(name) {
				return // garbage names (with '/', control bytes, …) are kept as given; no round trip promised
			}
		}
		var out strings.Builder
		for _, name := range names {
			for _, v := range h[name] {
				out.WriteString(name + ": " + v + "\r\n")
			}
		}
		again, err := verify.ParseHeaderLines([]byte(out.String()))
		if err != nil {
			t.Fatalf("written back, the headers no longer parse: %v\n%q", err, out.String())
		}
		if len(h) == 0 && len(again) == 0 {
			return
		}
		if !reflect.DeepEqual(h, again) {
			t.Fatalf("round trip changed the headers:\n%q\n%q", h, again)
		}
	})
}

// isToken reports whether s is an RFC 9110 token, what a real header name is.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && strings.IndexByte("!#$%&'*+-.^_`|~", c) < 0 {
			return false
		}
	}
	return s != ""
}

// A header whose value ends in an HTTP version is a header, not a request line (found by
// FuzzParseHeaderLines: such lines were dropped).
func TestParseHeaderLinesKeepsValuesEndingInAVersion(t *testing.T) {
	h, err := verify.ParseHeaderLines([]byte("POST /notify HTTP/1.1\nUser-Agent: curl HTTP/1.1\nVia: 1.1 HTTP/2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if h.Get("User-Agent") != "curl HTTP/1.1" || h.Get("Via") != "1.1 HTTP/2" || len(h) != 2 {
		t.Fatalf("headers = %q", h)
	}
}
