// Package verify checks the signature of a WeChat Pay APIv3 callback notification: the
// Wechatpay-Timestamp/Nonce/Signature/Serial headers over the raw body, SHA256-RSA PKCS#1 v1.5, with the
// key chosen by Wechatpay-Serial among an account's platform certificates and WeChat Pay public key.
//
// The RSA check itself is delegated to wechatpay-go's verifiers. This package wraps them because the SDK
// cannot inject a clock, answers "not found" and "not base64" with untyped strings, and treats signature
// probes like any other garbage; here every failed check has its own sentinel error so that the receiver can
// answer, count and log it without echoing the request.
package verify

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/verifiers"
	"github.com/wechatpay-apiv3/wechatpay-go/utils"
)

// Header names of a signed notification.
const (
	HeaderTimestamp     = "Wechatpay-Timestamp"
	HeaderNonce         = "Wechatpay-Nonce"
	HeaderSignature     = "Wechatpay-Signature"
	HeaderSerial        = "Wechatpay-Serial"
	HeaderSignatureType = "Wechatpay-Signature-Type"
)

// SignatureType is the only Wechatpay-Signature-Type accepted (an absent header means the same).
const SignatureType = "WECHATPAY2-SHA256-RSA2048"

// ProbePrefix starts every signature WeChat Pay sends on purpose wrong, to see that merchants verify.
const ProbePrefix = "WECHATPAY/SIGNTEST/"

// DefaultMaxSkew is the largest accepted distance between Wechatpay-Timestamp and the local clock.
const DefaultMaxSkew = 300 * time.Second

// DefaultRefreshWait bounds how long one notification waits for an on-demand certificate refresh. WeChat
// Pay wants an answer within 5 s and the store may take 2 more; a refresh that takes longer still completes
// in the background and serves WeChat's next retry (15 s later).
const DefaultRefreshWait = 1500 * time.Millisecond

// Sentinel errors, one per check. Use Reason to turn them into a metric/log label.
var (
	ErrMissingHeader            = errors.New("verify: missing header")
	ErrUnsupportedSignatureType = errors.New("verify: unsupported Wechatpay-Signature-Type")
	ErrBadTimestamp             = errors.New("verify: Wechatpay-Timestamp is not a unix time")
	ErrStaleTimestamp           = errors.New("verify: timestamp outside the allowed skew")
	ErrProbe                    = errors.New("verify: signature probe (WECHATPAY/SIGNTEST/)")
	ErrUnknownSerial            = errors.New("verify: unknown Wechatpay-Serial")
	ErrBadBase64                = errors.New("verify: signature is not base64")
	ErrSignatureMismatch        = errors.New("verify: signature mismatch")
	ErrNoKeys                   = errors.New("verify: no platform certificate or public key configured")
)

var reasons = []struct {
	err    error
	reason string
}{
	{ErrMissingHeader, "missing_header"},
	{ErrUnsupportedSignatureType, "unsupported_signature_type"},
	{ErrBadTimestamp, "bad_timestamp"},
	{ErrStaleTimestamp, "stale_timestamp"},
	{ErrProbe, "probe"},
	{ErrUnknownSerial, "unknown_serial"},
	{ErrBadBase64, "bad_base64"},
	{ErrSignatureMismatch, "signature_mismatch"},
}

// Reason names the check that err failed, as a short label for metrics and logs ("stale_timestamp",
// "probe", …), or "other" when err does not come from this package.
func Reason(err error) string {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "other"
}

// Headers are the signature headers of one notification, as received.
type Headers struct {
	Timestamp, Nonce, Signature, Serial, SignatureType string
}

// HeadersFrom reads the signature headers from an HTTP header, trimming surrounding spaces.
func HeadersFrom(h http.Header) Headers {
	get := func(k string) string { return strings.TrimSpace(h.Get(k)) }
	return Headers{
		Timestamp:     get(HeaderTimestamp),
		Nonce:         get(HeaderNonce),
		Signature:     get(HeaderSignature),
		Serial:        get(HeaderSerial),
		SignatureType: get(HeaderSignatureType),
	}
}

// KeySet holds the keys of one merchant account that may sign its notifications. Both kinds may be set at
// once: WeChat Pay moves a merchant from certificates to a public key over days, signing with either.
type KeySet struct {
	// PublicKeyID is the WeChat Pay public key id (PUB_KEY_ID_…), sent as Wechatpay-Serial.
	PublicKeyID string
	PublicKey   *rsa.PublicKey
	// Certificates are the platform certificates, looked up by their upper-case hex serial. It may be a
	// static map or a downloader that refreshes the certificates in the background.
	Certificates core.CertificateGetter
	// Refresher, optional, re-downloads Certificates when a well-formed notification names a serial they
	// do not hold: WeChat Pay may start signing with a new certificate before the periodic refresh.
	Refresher Refresher
}

// Refresher brings the platform certificates up to date now. It must limit its own rate (an unknown serial
// costs an attacker nothing) and return once ctx ends.
type Refresher interface {
	Refresh(ctx context.Context) error
}

// StaticCertificates makes a CertificateGetter of fixed platform certificates, keyed by serial as WeChat
// Pay writes it in Wechatpay-Serial.
func StaticCertificates(certs ...*x509.Certificate) core.CertificateGetter {
	return core.NewCertificateMapWithList(certs)
}

// Option configures a Verifier.
type Option func(*Verifier)

// WithClock replaces time.Now, for tests and for re-checking a captured notification at its own time.
func WithClock(now func() time.Time) Option { return func(v *Verifier) { v.now = now } }

// WithMaxSkew sets the accepted distance between Wechatpay-Timestamp and the clock; 0 keeps the default.
func WithMaxSkew(d time.Duration) Option {
	return func(v *Verifier) {
		if d > 0 {
			v.maxSkew = d
		}
	}
}

// WithRefreshWait bounds the wait for an on-demand certificate refresh; 0 keeps DefaultRefreshWait.
func WithRefreshWait(d time.Duration) Option {
	return func(v *Verifier) {
		if d > 0 {
			v.refreshWait = d
		}
	}
}

// Verifier verifies the notifications of one merchant account. It is safe for concurrent use.
type Verifier struct {
	pubID       string
	pub         *verifiers.SHA256WithRSAPubkeyVerifier
	certs       core.CertificateGetter
	certVer     *verifiers.SHA256WithRSAVerifier
	refresher   Refresher
	refreshWait time.Duration
	now         func() time.Time
	maxSkew     time.Duration
}

// New builds a Verifier for ks. It fails with ErrNoKeys when ks holds no key at all: a verifier that
// accepts nothing is a configuration mistake, and one that accepts everything must never exist.
func New(ks KeySet, opts ...Option) (*Verifier, error) {
	v := &Verifier{now: time.Now, maxSkew: DefaultMaxSkew, refreshWait: DefaultRefreshWait}
	if ks.PublicKey != nil {
		if ks.PublicKeyID == "" {
			return nil, fmt.Errorf("verify: public key without its id: %w", ErrNoKeys)
		}
		v.pubID = ks.PublicKeyID
		v.pub = verifiers.NewSHA256WithRSAPubkeyVerifier(ks.PublicKeyID, *ks.PublicKey)
	}
	if ks.Certificates != nil {
		v.certs = ks.Certificates
		v.certVer = verifiers.NewSHA256WithRSAVerifier(ks.Certificates)
		v.refresher = ks.Refresher
	}
	if v.pub == nil && v.certs == nil {
		return nil, ErrNoKeys
	}
	for _, o := range opts {
		o(v)
	}
	return v, nil
}

// Serials lists the key ids and certificate serials this verifier currently knows, for error messages.
func (v *Verifier) Serials(ctx context.Context) []string {
	var out []string
	if v.pub != nil {
		out = append(out, v.pubID)
	}
	if v.certs != nil {
		for s := range v.certs.GetAll(ctx) {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// Verify checks one notification. The checks run in this order, and the first that fails is returned,
// wrapped around its sentinel: headers present, signature type, timestamp format and skew, probe prefix,
// serial known, base64, RSA signature. When the serial is unknown but looks like a certificate serial and
// the signature is base64, the KeySet's Refresher (if any) is asked once, for at most the refresh wait, and
// the serial looked up again. Error texts carry at most the serial and the timestamp, never the body or
// the signature.
func (v *Verifier) Verify(ctx context.Context, h Headers, body []byte) error {
	for _, hv := range []struct{ name, value string }{
		{HeaderTimestamp, h.Timestamp}, {HeaderNonce, h.Nonce}, {HeaderSignature, h.Signature}, {HeaderSerial, h.Serial},
	} {
		if hv.value == "" {
			return fmt.Errorf("%w: %s", ErrMissingHeader, hv.name)
		}
	}
	if h.SignatureType != "" && h.SignatureType != SignatureType {
		return fmt.Errorf("%w: %q (only %s is supported)", ErrUnsupportedSignatureType, clip(h.SignatureType), SignatureType)
	}
	ts, err := strconv.ParseInt(h.Timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrBadTimestamp, clip(h.Timestamp))
	}
	if skew := v.now().Sub(time.Unix(ts, 0)); skew > v.maxSkew || skew < -v.maxSkew {
		return fmt.Errorf("%w: timestamp %d is %s from now (max ±%s)", ErrStaleTimestamp, ts, skew.Round(time.Second), v.maxSkew)
	}
	if strings.HasPrefix(h.Signature, ProbePrefix) {
		return ErrProbe
	}
	sv, serial := v.pick(ctx, h.Serial)
	_, b64err := base64.StdEncoding.DecodeString(h.Signature)
	refreshed := ""
	if sv == nil && v.refresher != nil && b64err == nil && looksLikeCertSerial(h.Serial) {
		refreshed = v.refresh(ctx)
		sv, serial = v.pick(ctx, h.Serial)
	}
	if sv == nil {
		return fmt.Errorf("%w: %q is neither the public key id nor a platform certificate serial of this account (configured: %s)%s",
			ErrUnknownSerial, clip(h.Serial), strings.Join(v.Serials(ctx), ", "), refreshed)
	}
	if b64err != nil {
		return ErrBadBase64
	}
	// The signed message is exactly three lines: timestamp, nonce, raw body, each ending in "\n". It is
	// built as the string the SDK takes, so that the body is copied once, not twice.
	var msg strings.Builder
	msg.Grow(len(h.Timestamp) + len(h.Nonce) + len(body) + 3)
	msg.WriteString(h.Timestamp)
	msg.WriteByte('\n')
	msg.WriteString(h.Nonce)
	msg.WriteByte('\n')
	msg.Write(body)
	msg.WriteByte('\n')
	if err := sv.Verify(ctx, serial, msg.String(), h.Signature); err != nil {
		// The SDK's error text says nothing we do not already know; the sentinel is what matters.
		return fmt.Errorf("%w (serial %s)", ErrSignatureMismatch, serial)
	}
	return nil
}

// refresh asks the Refresher for fresh certificates within the refresh wait and says how that went, for
// the error text. The Refresher logs its own failures; here they only explain this one rejection.
func (v *Verifier) refresh(ctx context.Context) string {
	rctx, cancel := context.WithTimeout(ctx, v.refreshWait)
	defer cancel()
	if err := v.refresher.Refresh(rctx); err != nil {
		return "; certificate refresh: " + err.Error()
	}
	return "; certificates refreshed, still unknown"
}

// looksLikeCertSerial: platform certificate serials are hex. A public key id or anything else cannot be
// cured by downloading certificates, so it triggers no refresh.
func looksLikeCertSerial(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		isHex := '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
		if !isHex {
			return false
		}
	}
	return true
}

type sdkVerifier interface {
	Verify(ctx context.Context, serial, message, signature string) error
}

// pick chooses the key by serial: the public key when the serial is its id, else a platform certificate.
// Certificate serials are hex, so they are matched without regard to case.
func (v *Verifier) pick(ctx context.Context, serial string) (sdkVerifier, string) {
	if v.pub != nil && serial == v.pubID {
		return v.pub, serial
	}
	if v.certs != nil {
		if _, ok := v.certs.Get(ctx, serial); ok {
			return v.certVer, serial
		}
		if up := strings.ToUpper(serial); up != serial {
			if _, ok := v.certs.Get(ctx, up); ok {
				return v.certVer, up
			}
		}
	}
	return nil, ""
}

// LoadCertificatePEM parses a platform certificate and returns it with its serial as WeChat Pay writes it.
func LoadCertificatePEM(pem []byte) (*x509.Certificate, string, error) {
	c, err := utils.LoadCertificate(string(pem))
	if err != nil {
		return nil, "", fmt.Errorf("not a PEM certificate: %w", err)
	}
	return c, utils.GetCertificateSerialNumber(*c), nil
}

// LoadPublicKeyPEM parses a WeChat Pay public key ("PUBLIC KEY" PEM block, PKIX).
func LoadPublicKeyPEM(pem []byte) (*rsa.PublicKey, error) {
	k, err := utils.LoadPublicKey(string(pem))
	if err != nil {
		return nil, fmt.Errorf("not a PEM RSA public key: %w", err)
	}
	return k, nil
}

// clip keeps hostile header values from blowing up error texts and logs.
func clip(s string) string {
	const limit = 48
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}
