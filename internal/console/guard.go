package console

import (
	"mime"
	"net"
	"net/http"
	"strings"
)

// The console's safety model, request by request:
//
//   - Every answer carries a Content-Security-Policy that allows only the console's own scripts, styles and
//     API (no inline script, no framing), and no CORS header, so no other origin may read an answer.
//   - While reads are open (a loopback bind without ReadsNeedToken), the Host header must name a loopback
//     host: a page on another site that rebinds its own name to 127.0.0.1 (DNS rebinding) reaches the port
//     under its own name, and is refused before it can read anything.
//   - The API refuses a request a browser marks as sent by another site (Sec-Fetch-Site), reads included.
//   - A change (POST) must be same-origin: net/http's CrossOriginProtection refuses a request whose
//     Sec-Fetch-Site or Origin says another site sent it; it must have a JSON body, which an HTML form
//     cannot send; and it must carry the token in an Authorization header, which a browser never adds by
//     itself, unlike a cookie. A cross-site script could set the header only after a CORS preflight that
//     the console never grants. Any one of the three stops a cross-site request forgery.
//   - The token lives in the page's sessionStorage (per tab), never in a cookie or a URL the server sees: dev's
//     printed link carries it in the fragment, which the browser keeps to itself and the page removes.

// guard applies the checks every request passes and the headers every answer carries.
func (h *Handler) guard(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.log.Warn().Str("method", r.Method).Str("path", r.URL.Path).Str("origin", r.Header.Get("Origin")).
			Str("sec_fetch_site", r.Header.Get("Sec-Fetch-Site")).Msg("console: cross-origin change refused")
		writeError(w, http.StatusForbidden, "cross_origin", "cross-origin requests may not change anything")
	}))
	protected := cop.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		// The API answers the console's own page and tools, never another site's page: browsers say which
		// is which in Sec-Fetch-Site (reading an answer would need CORS anyway; this refuses before work).
		if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" && strings.HasPrefix(r.URL.Path, "/api/") {
			h.log.Warn().Str("method", r.Method).Str("path", r.URL.Path).Str("sec_fetch_site", site).Msg("console: cross-site API request refused")
			writeError(w, http.StatusForbidden, "cross_origin", "the console's API answers its own page only")
			return
		}
		if !h.opts.ReadsNeedToken && !loopbackHost(r.Host) {
			h.log.Warn().Str("host", r.Host).Msg("console: request for a non-loopback host refused")
			writeError(w, http.StatusForbidden, "bad_host", "this console answers only to localhost or a loopback address; open it as http://127.0.0.1:PORT/")
			return
		}
		protected.ServeHTTP(w, r)
	})
}

// read wraps a read-only API route: open on loopback, the token otherwise.
func (h *Handler) read(fn http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.opts.ReadsNeedToken && !h.authorized(r) {
			h.unauthorized(w, r)
			return
		}
		fn(w, r)
	})
}

// change wraps a route that changes JetStream: a JSON body, a configured token, and that token in the
// Authorization header (cross-origin requests were refused in guard already).
func (h *Handler) change(fn http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "json_only", "changes take a JSON body (Content-Type: application/json)")
			return
		}
		if h.opts.Token == "" {
			writeError(w, http.StatusForbidden, "read_only", "this console is read-only: start it with a token (--token-file or CONSOLE_TOKEN_FILE) to replay or purge")
			return
		}
		if !h.authorized(r) {
			h.unauthorized(w, r)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		fn(w, r)
	})
}

func (h *Handler) unauthorized(w http.ResponseWriter, r *http.Request) {
	_, sent := bearer(r)
	h.log.Warn().Str("method", r.Method).Str("path", r.URL.Path).Bool("token_sent", sent).Msg("console: request without a valid token refused")
	w.Header().Set("WWW-Authenticate", `Bearer realm="wxpay-events console"`)
	writeError(w, http.StatusUnauthorized, "unauthorized", "this needs the console's token: Authorization: Bearer <token>")
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// loopbackHost reports whether a Host header names this machine's loopback: localhost (RFC 6761 keeps it
// and *.localhost on loopback) or a loopback address, with any port.
func loopbackHost(host string) bool {
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	name = strings.ToLower(strings.Trim(name, "[]"))
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return true
	}
	ip := net.ParseIP(name)
	return ip != nil && ip.IsLoopback()
}
