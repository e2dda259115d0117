package certs

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/wechatpay-apiv3/wechatpay-go/core"

	"github.com/wxpay-events/wxpay-events/internal/verify"
)

// errProbe marks an answer carrying one of WeChat Pay's deliberate wrong signatures; run asks again once.
var errProbe = verify.ErrProbe

// The certificate list as WeChat Pay sends it (GET /v3/certificates, /v3/global/certificates).
type certificateList struct {
	Data []struct {
		SerialNo           string                `json:"serial_no"`
		EffectiveTime      string                `json:"effective_time"`
		ExpireTime         string                `json:"expire_time"`
		EncryptCertificate *encryptedCertificate `json:"encrypt_certificate"`
	} `json:"data"`
}

type encryptedCertificate struct {
	Algorithm      string `json:"algorithm"`
	Nonce          string `json:"nonce"`
	AssociatedData string `json:"associated_data"`
	Ciphertext     string `json:"ciphertext"`
}

// apiErrorCode is WeChat Pay's machine-readable error code ("SIGN_ERROR", "RESOURCE_NOT_EXISTS"); only a
// code of this shape is repeated in an error, never the rest of the answer.
var apiErrorCode = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,63}$`)

// hints say what to do about WeChat Pay's answers that have an obvious cause.
var hints = map[string]string{
	"SIGN_ERROR":          "check private_key_file and cert_serial: they must be the merchant API key and its certificate's serial",
	"RESOURCE_NOT_EXISTS": "this merchant may have a WeChat Pay public key instead of platform certificates: configure public_key_id/public_key_file",
}

// download fetches, decrypts and checks the certificate list. The answer's signature is verified after
// decryption, with the certificate its Wechatpay-Serial names, taken from this very list or from the ones
// already held. Verifying with a certificate from the list itself is how a first download can be checked at
// all (wechatpay-go skips the check on the first download); it is sound because each listed certificate
// was sealed with the APIv3 key (AEAD_AES_256_GCM), which only WeChat Pay and the merchant hold: a forger
// without the key can neither plant a certificate nor sign with one.
func (d *Downloader) download(ctx context.Context) (map[string]*x509.Certificate, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.url, nil)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	auth, err := d.cred.GenerateAuthorizationHeader(ctx, http.MethodGet, req.URL.RequestURI(), "")
	if err != nil {
		return nil, fmt.Errorf("certs: merchant %s: sign the request: %w", d.o.MchID, err)
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "wxpay-events")
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("certs: merchant %s: %w", d.o.MchID, err)
	}
	defer func() { _ = resp.Body.Close() }() // the whole answer has been read or is not wanted
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("certs: merchant %s: GET %s: read the answer: %w", d.o.MchID, d.url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, apiError(d.o.MchID, d.url, resp.StatusCode, body)
	}
	if len(body) > maxResponseBytes {
		return nil, fmt.Errorf("%w: merchant %s: GET %s: answer over %d bytes", ErrMalformedResponse, d.o.MchID, d.url, maxResponseBytes)
	}
	var list certificateList
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("%w: merchant %s: GET %s: not the certificate list JSON", ErrMalformedResponse, d.o.MchID, d.url)
	}
	if len(list.Data) == 0 {
		return nil, fmt.Errorf("%w: merchant %s: GET %s: the list holds no certificate", ErrMalformedResponse, d.o.MchID, d.url)
	}
	got := make(map[string]*x509.Certificate, len(list.Data))
	for i, e := range list.Data {
		serial := strings.ToUpper(strings.TrimSpace(e.SerialNo))
		name := fmt.Sprintf("data[%d] (serial %s)", i, clip(serial))
		if serial == "" || e.EncryptCertificate == nil {
			return nil, fmt.Errorf("%w: merchant %s: %s lacks serial_no or encrypt_certificate", ErrMalformedResponse, d.o.MchID, name)
		}
		plain, err := open(d.o.APIv3Key, *e.EncryptCertificate)
		if err != nil {
			return nil, fmt.Errorf("merchant %s: %s: %w", d.o.MchID, name, err)
		}
		c, err := parseCertificate(plain)
		if err != nil {
			return nil, fmt.Errorf("%w: merchant %s: %s: %w", ErrMalformedResponse, d.o.MchID, name, err)
		}
		// Key by the serial WeChat Pay writes in Wechatpay-Serial, but only when it is the certificate's:
		// leading zeros aside, anything else would file a certificate under the wrong name.
		if own := fmt.Sprintf("%X", c.SerialNumber.Bytes()); strings.TrimLeft(own, "0") != strings.TrimLeft(serial, "0") {
			return nil, fmt.Errorf("%w: merchant %s: %s holds the certificate of serial %s", ErrMalformedResponse, d.o.MchID, name, own)
		}
		got[serial] = c
	}
	if err := d.verifyAnswer(resp.Header, body, got); err != nil {
		return nil, err
	}
	return got, nil
}

// verifyAnswer checks the Wechatpay-* signature of the answer like a notification's (headers, timestamp
// within ±5 minutes of the clock, probe, serial, RSA), with the downloaded and the known certificates.
func (d *Downloader) verifyAnswer(h http.Header, body []byte, got map[string]*x509.Certificate) error {
	keys := d.GetAll(context.Background())
	for s, c := range got {
		keys[s] = c
	}
	v, err := verify.New(verify.KeySet{Certificates: core.NewCertificateMap(keys)}, verify.WithClock(d.o.Clock))
	if err != nil {
		return fmt.Errorf("%w: merchant %s: %w", ErrResponseSignature, d.o.MchID, err)
	}
	if err := v.Verify(context.Background(), verify.HeadersFrom(h), body); err != nil {
		return fmt.Errorf("%w: merchant %s: GET %s: %w", ErrResponseSignature, d.o.MchID, d.url, err)
	}
	return nil
}

// apiError describes a non-200 answer by its status and WeChat Pay's error code, with a hint when the
// cause is well known.
func apiError(mchid, url string, status int, body []byte) error {
	var e struct {
		Code string `json:"code"`
	}
	code := ""
	if json.Unmarshal(body, &e) == nil && apiErrorCode.MatchString(e.Code) {
		code = " " + e.Code
	}
	hint := ""
	if h, ok := hints[strings.TrimSpace(code)]; ok {
		hint = " (" + h + ")"
	}
	return fmt.Errorf("%w: merchant %s: GET %s: HTTP %d%s%s", ErrAPI, mchid, url, status, code, hint)
}

// open decrypts one encrypt_certificate. The lengths are checked first: Go's GCM panics on a nonce that
// is not 12 bytes, and AES would quietly accept a 16-byte key as AES-128 (wechatpay-go's DecryptAES256GCM
// does both).
func open(key []byte, ec encryptedCertificate) ([]byte, error) {
	if ec.Algorithm != "AEAD_AES_256_GCM" {
		return nil, fmt.Errorf("%w: algorithm %q is not AEAD_AES_256_GCM", ErrMalformedResponse, clip(ec.Algorithm))
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("%w: the APIv3 key holds %d bytes, want 32", ErrDecrypt, len(key))
	}
	if len(ec.Nonce) != 12 {
		return nil, fmt.Errorf("%w: nonce of %d bytes, AEAD_AES_256_GCM uses 12", ErrMalformedResponse, len(ec.Nonce))
	}
	ct, err := base64.StdEncoding.DecodeString(ec.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("%w: ciphertext is not base64", ErrMalformedResponse)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecrypt, err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecrypt, err)
	}
	if len(ct) < gcm.Overhead() {
		return nil, fmt.Errorf("%w: ciphertext of %d bytes is shorter than the GCM tag", ErrMalformedResponse, len(ct))
	}
	plain, err := gcm.Open(nil, []byte(ec.Nonce), ct, []byte(ec.AssociatedData))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed: the APIv3 key is not this merchant's, or the answer was altered", ErrDecrypt)
	}
	return plain, nil
}

func parseCertificate(plain []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(bytes.TrimSpace(plain))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("decrypted content is not a PEM certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("decrypted certificate does not parse: %w", err)
	}
	return c, nil
}

// clip keeps values from the answer short in error texts.
func clip(s string) string {
	const limit = 48
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}
