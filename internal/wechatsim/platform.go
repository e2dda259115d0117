// Package wechatsim stands in for WeChat Pay: it holds a platform key pair, a platform certificate, a
// WeChat Pay public key id and an APIv3 key, and builds notifications encrypted and signed exactly as WeChat
// Pay does (AEAD_AES_256_GCM resource; SHA256-RSA over "timestamp\nnonce\nbody\n"). Tests, the simulator and
// the all-in-one dev mode use it; it is never on the production path.
package wechatsim

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Platform is one merchant's view of WeChat Pay: the keys WeChat signs with and the merchant's APIv3 key.
//
// Key backs both the WeChat Pay public key (PublicKeyID, PublicPEM) and the first platform certificate
// (Cert, CertSerial, CertPEM). RotateCertificate issues further certificates with keys of their own, as
// WeChat Pay does every few years; those are reached through Certificates, and SignWithCertificate signs
// with the newest. The exported fields never change after construction, so a Platform shared by tests
// stays consistent; rotation state lives behind a pointer, shared by copies of the Platform.
type Platform struct {
	MchID       string
	Key         *rsa.PrivateKey
	Cert        *x509.Certificate
	CertSerial  string
	CertPEM     []byte
	PublicKeyID string
	PublicPEM   []byte
	PrivatePEM  []byte
	APIv3Key    []byte
	// Now is the clock that stamps Wechatpay-Timestamp; time.Now when nil.
	Now func() time.Time

	state *platformState
}

// PlatformCert is one platform certificate with the key WeChat Pay signs with under its serial.
type PlatformCert struct {
	Key    *rsa.PrivateKey
	Cert   *x509.Certificate
	Serial string
	PEM    []byte
}

// Merchant is the merchant's own API key pair (apiclient_key.pem and the serial of apiclient_cert.pem),
// with which the merchant signs its requests to WeChat Pay, such as the certificate download.
type Merchant struct {
	Key        *rsa.PrivateKey
	CertSerial string
	KeyPEM     []byte
}

type platformState struct {
	mu    sync.Mutex
	certs []PlatformCert // oldest first

	merchantOnce sync.Once
	merchant     *Merchant
	merchantErr  error
}

func (p *Platform) initState() {
	p.state = &platformState{certs: []PlatformCert{{Key: p.Key, Cert: p.Cert, Serial: p.CertSerial, PEM: p.CertPEM}}}
}

// NewPlatform generates a fresh platform for mchid: a 2048-bit RSA key, a self-signed certificate with a
// random serial, a public key id and a random 32-character APIv3 key.
func NewPlatform(mchid string) (*Platform, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("wechatsim: generate key: %w", err)
	}
	return platformFromKey(mchid, key, randomToken(32))
}

func platformFromKey(mchid string, key *rsa.PrivateKey, apiV3Key string) (*Platform, error) {
	pc, err := issueCertificate(key, time.Now().Add(-time.Hour))
	if err != nil {
		return nil, err
	}
	pkix, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	p := &Platform{
		MchID:       mchid,
		Key:         key,
		Cert:        pc.Cert,
		CertSerial:  pc.Serial,
		CertPEM:     pc.PEM,
		PublicKeyID: "PUB_KEY_ID_" + randomDigits(32), // WeChat's ids are digits, e.g. PUB_KEY_ID_0000000000000024101100397200000006
		PublicPEM:   pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}),
		PrivatePEM:  pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		APIv3Key:    []byte(apiV3Key),
	}
	p.initState()
	return p, nil
}

// issueCertificate makes a self-signed platform certificate for key with a random 160-bit serial, valid
// five years from notBefore.
func issueCertificate(key *rsa.PrivateKey, notBefore time.Time) (PlatformCert, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 159))
	if err != nil {
		return PlatformCert{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "Tenpay.com sign (wxpay-events simulator)", Organization: []string{"wechatsim"}},
		NotBefore:    notBefore,
		NotAfter:     notBefore.Add(5 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return PlatformCert{}, fmt.Errorf("wechatsim: certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return PlatformCert{}, err
	}
	return PlatformCert{
		Key:    key,
		Cert:   cert,
		Serial: fmt.Sprintf("%X", cert.SerialNumber.Bytes()),
		PEM:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	}, nil
}

// Certificates lists the platform certificates WeChat Pay currently serves for this merchant, oldest first.
func (p *Platform) Certificates() []PlatformCert {
	if p.state == nil {
		return []PlatformCert{{Key: p.Key, Cert: p.Cert, Serial: p.CertSerial, PEM: p.CertPEM}}
	}
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	return append([]PlatformCert(nil), p.state.certs...)
}

// RotateCertificate issues a new platform certificate with a new key, as WeChat Pay does before the
// current one expires: from now on both are served by the certificate API and SignWithCertificate signs
// with the new one, until RetireCertificate drops the old.
func (p *Platform) RotateCertificate() (PlatformCert, error) {
	if p.state == nil {
		return PlatformCert{}, errNoState
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return PlatformCert{}, fmt.Errorf("wechatsim: generate key: %w", err)
	}
	p.state.mu.Lock()
	newest := p.state.certs[len(p.state.certs)-1]
	p.state.mu.Unlock()
	// A later NotBefore makes the new certificate the newest by the rule clients use; certificates keep
	// whole seconds.
	notBefore := time.Now().Add(-time.Hour).Truncate(time.Second)
	if !notBefore.After(newest.Cert.NotBefore) {
		notBefore = newest.Cert.NotBefore.Add(time.Second)
	}
	pc, err := issueCertificate(key, notBefore)
	if err != nil {
		return PlatformCert{}, err
	}
	p.state.mu.Lock()
	p.state.certs = append(p.state.certs, pc)
	p.state.mu.Unlock()
	return pc, nil
}

// RetireCertificate stops serving the certificate with this serial (the end of a rotation's overlap).
// The last certificate cannot be retired.
func (p *Platform) RetireCertificate(serial string) error {
	if p.state == nil {
		return errNoState
	}
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	for i, c := range p.state.certs {
		if c.Serial == serial {
			if len(p.state.certs) == 1 {
				return fmt.Errorf("wechatsim: %s is the only platform certificate", serial)
			}
			p.state.certs = append(p.state.certs[:i:i], p.state.certs[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("wechatsim: no platform certificate %s", serial)
}

// signingCert is the certificate that signs under serial, or the newest when serial is empty.
func (p *Platform) signingCert(serial string) (PlatformCert, error) {
	all := p.Certificates()
	if serial == "" {
		return all[len(all)-1], nil
	}
	for _, c := range all {
		if c.Serial == serial {
			return c, nil
		}
	}
	return PlatformCert{}, fmt.Errorf("wechatsim: no platform certificate %s", serial)
}

// Merchant returns the merchant's API key pair, generated on first use (most simulations never download
// certificates, and RSA key generation is slow).
func (p *Platform) Merchant() (*Merchant, error) {
	if p.state == nil {
		return nil, errNoState
	}
	st := p.state
	st.merchantOnce.Do(func() {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			st.merchantErr = fmt.Errorf("wechatsim: generate merchant key: %w", err)
			return
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			st.merchantErr = fmt.Errorf("wechatsim: merchant key: %w", err)
			return
		}
		st.merchant = &Merchant{
			Key:        key,
			CertSerial: strings.ToUpper(randomHex(20)),
			// PKCS#8, as in the apiclient_key.pem WeChat Pay's certificate tool writes.
			KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		}
	})
	return st.merchant, st.merchantErr
}

// WriteMerchantKey writes the merchant's API private key (apiclient_key.pem) into dir, 0600, and returns
// its path, for a configuration's private_key_file.
func (p *Platform) WriteMerchantKey(dir string) (string, error) {
	m, err := p.Merchant()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, p.MchID+"-apiclient-key.pem")
	if err := os.WriteFile(path, m.KeyPEM, 0o600); err != nil {
		return "", fmt.Errorf("wechatsim: %w", err)
	}
	return path, nil
}

var errNoState = errors.New("wechatsim: platform not made by NewPlatform or LoadPlatform")

// Files are the paths WriteFiles wrote.
type Files struct {
	CertFile, PublicKeyFile, APIv3KeyFile, PrivateKeyFile string
}

// WriteFiles writes the merchant-side files (platform certificate, public key, APIv3 key) and the platform
// private key into dir, 0600, and returns their paths.
func (p *Platform) WriteFiles(dir string) (Files, error) {
	f := Files{
		CertFile:       filepath.Join(dir, p.MchID+"-platform-cert.pem"),
		PublicKeyFile:  filepath.Join(dir, p.MchID+"-wechatpay-public-key.pem"),
		APIv3KeyFile:   filepath.Join(dir, p.MchID+"-apiv3.key"),
		PrivateKeyFile: filepath.Join(dir, p.MchID+"-platform-private-key.pem"),
	}
	for path, data := range map[string][]byte{
		f.CertFile: p.CertPEM, f.PublicKeyFile: p.PublicPEM, f.APIv3KeyFile: p.APIv3Key, f.PrivateKeyFile: p.PrivatePEM,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return Files{}, fmt.Errorf("wechatsim: %w", err)
		}
	}
	return f, nil
}

// Env is the single-account configuration (as environment variables) matching WriteFiles' files.
func (p *Platform) Env(f Files) map[string]string {
	return map[string]string{
		"WECHATPAY_MCHID":               p.MchID,
		"WECHATPAY_PUBLIC_KEY_ID":       p.PublicKeyID,
		"WECHATPAY_PUBLIC_KEY_FILE":     f.PublicKeyFile,
		"WECHATPAY_PLATFORM_CERT_FILES": f.CertFile,
		"WECHATPAY_APIV3_KEY_FILE":      f.APIv3KeyFile,
	}
}

// KeyKind says which of the platform's keys signs a notification (and so what Wechatpay-Serial carries).
type KeyKind int

// Key kinds.
const (
	SignWithPublicKeyID KeyKind = iota // Wechatpay-Serial: PUB_KEY_ID_…
	SignWithCertificate                // Wechatpay-Serial: the certificate's hex serial
)

// Notification is one callback as WeChat Pay would POST it.
type Notification struct {
	ID        string
	EventType string
	Body      []byte
	Header    http.Header
}

// Options shape one notification; the zero value gives a well-formed, currently valid notification.
type Options struct {
	ID        string    // notification id; random UUID when empty
	Key       KeyKind   // which key signs it
	Timestamp time.Time // Wechatpay-Timestamp; the platform's clock when zero
	Probe     bool      // send a WECHATPAY/SIGNTEST/ signature probe instead of a valid signature
	// OriginalType and AssociatedData of the resource; derived from the event type when empty.
	OriginalType, AssociatedData string
	CreateTime                   string // envelope create_time; the timestamp in +08:00 when empty
	Summary                      string
	// CertSerial picks the platform certificate that signs, with Key SignWithCertificate; the newest when
	// empty. An older one signs what WeChat Pay sent during a rotation's overlap.
	CertSerial string
}

// Build encrypts plaintext for eventType and signs the envelope.
func (p *Platform) Build(eventType string, plaintext []byte, o Options) (Notification, error) {
	if o.ID == "" {
		o.ID = NewUUID()
	}
	ts := o.Timestamp
	if ts.IsZero() {
		ts = p.now()
	}
	if o.OriginalType == "" {
		o.OriginalType = originalType(eventType)
	}
	if o.AssociatedData == "" {
		o.AssociatedData = o.OriginalType
	}
	if o.CreateTime == "" {
		o.CreateTime = ts.In(beijing).Format(time.RFC3339)
	}
	if o.Summary == "" {
		o.Summary = "通知"
	}
	nonce := randomToken(12)
	ct, err := p.Encrypt(nonce, o.AssociatedData, plaintext)
	if err != nil {
		return Notification{}, err
	}
	env := envelope{
		ID: o.ID, CreateTime: o.CreateTime, ResourceType: "encrypt-resource", EventType: eventType, Summary: o.Summary,
		Resource: resource{OriginalType: o.OriginalType, Algorithm: "AEAD_AES_256_GCM", Ciphertext: ct, AssociatedData: o.AssociatedData, Nonce: nonce},
	}
	body, err := json.Marshal(env)
	if err != nil {
		return Notification{}, err
	}
	h, err := p.sign(body, ts, o.Key, o.Probe, o.CertSerial)
	if err != nil {
		return Notification{}, err
	}
	return Notification{ID: o.ID, EventType: eventType, Body: body, Header: h}, nil
}

// Sign returns the headers WeChat Pay sends with body at time ts. SignWithCertificate signs with the
// newest platform certificate.
func (p *Platform) Sign(body []byte, ts time.Time, kind KeyKind, probe bool) (http.Header, error) {
	return p.sign(body, ts, kind, probe, "")
}

func (p *Platform) sign(body []byte, ts time.Time, kind KeyKind, probe bool, certSerial string) (http.Header, error) {
	key, serial := p.Key, p.PublicKeyID
	if kind == SignWithCertificate {
		pc, err := p.signingCert(certSerial)
		if err != nil {
			return nil, err
		}
		key, serial = pc.Key, pc.Serial
	}
	h, err := signHeaders(key, serial, body, ts, probe)
	if err != nil {
		return nil, err
	}
	h.Set("Content-Type", "application/json")
	return h, nil
}

// signHeaders makes the Wechatpay-* headers (and Request-ID) of a message WeChat Pay signs with key under
// serial: notifications and API answers are signed the same way.
func signHeaders(key *rsa.PrivateKey, serial string, body []byte, ts time.Time, probe bool) (http.Header, error) {
	stamp := strconv.FormatInt(ts.Unix(), 10)
	nonce := randomHex(16)
	var sig string
	if probe {
		sig = "WECHATPAY/SIGNTEST/" + base64.StdEncoding.EncodeToString([]byte(randomToken(96)))
	} else {
		digest := sha256.Sum256([]byte(stamp + "\n" + nonce + "\n" + string(body) + "\n"))
		raw, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
		if err != nil {
			return nil, fmt.Errorf("wechatsim: sign: %w", err)
		}
		sig = base64.StdEncoding.EncodeToString(raw)
	}
	h := http.Header{}
	h.Set("Wechatpay-Nonce", nonce)
	h.Set("Wechatpay-Timestamp", stamp)
	h.Set("Wechatpay-Serial", serial)
	h.Set("Wechatpay-Signature", sig)
	h.Set("Wechatpay-Signature-Type", "WECHATPAY2-SHA256-RSA2048")
	h.Set("Request-ID", strings.ToUpper(randomHex(20))+"-0")
	return h, nil
}

// Encrypt seals plaintext with the APIv3 key as a notification resource: base64(ciphertext‖tag).
func (p *Platform) Encrypt(nonce, associatedData string, plaintext []byte) (string, error) {
	block, err := aes.NewCipher(p.APIv3Key)
	if err != nil {
		return "", fmt.Errorf("wechatsim: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(gcm.Seal(nil, []byte(nonce), plaintext, []byte(associatedData))), nil
}

func (p *Platform) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

type envelope struct {
	ID           string   `json:"id"`
	CreateTime   string   `json:"create_time"`
	ResourceType string   `json:"resource_type"`
	EventType    string   `json:"event_type"`
	Summary      string   `json:"summary"`
	Resource     resource `json:"resource"`
}

type resource struct {
	OriginalType   string `json:"original_type"`
	Algorithm      string `json:"algorithm"`
	Ciphertext     string `json:"ciphertext"`
	AssociatedData string `json:"associated_data"`
	Nonce          string `json:"nonce"`
}

var beijing = time.FixedZone("CST", 8*3600)

func originalType(eventType string) string {
	switch {
	case strings.HasPrefix(eventType, "TRANSACTION."):
		return "transaction"
	case strings.HasPrefix(eventType, "REFUND."):
		return "refund"
	case strings.HasPrefix(eventType, "VIOLATION."):
		return "violation"
	}
	return ""
}

const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	for i := range b {
		b[i] = alnum[int(b[i])%len(alnum)]
	}
	return string(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return fmt.Sprintf("%x", b)
}

// randomDigits returns n random decimal digits.
func randomDigits(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	for i := range b {
		b[i] = '0' + b[i]%10
	}
	return string(b)
}

// NewUUID returns a random (version 4) UUID string, the shape of WeChat's notification ids.
func NewUUID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
