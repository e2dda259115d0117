package wechatsim

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Paths of WeChat Pay's platform-certificate API: mainland (api.mch.weixin.qq.com) and cross-border
// (apihk.mch.weixin.qq.com, per WeChat Pay's cross-border APP guide).
const (
	CertificatesPath       = "/v3/certificates"
	GlobalCertificatesPath = "/v3/global/certificates"
)

// CertificateAPI stands in for WeChat Pay's platform-certificate download: GET /v3/certificates and
// GET /v3/global/certificates, for the merchants of the platforms it was made with. Like WeChat Pay it
// authenticates the request by the merchant's Authorization header (WECHATPAY2-SHA256-RSA2048, checked
// against the merchant's public key, answering 401 with WeChat's {"code","message"} error), returns every
// platform certificate currently served, each sealed with the merchant's APIv3 key (AEAD_AES_256_GCM,
// associated data "certificate"), and signs the answer with the newest platform certificate's key. Mount
// it on an httptest.Server; it is safe for concurrent use.
type CertificateAPI struct {
	platforms map[string]*Platform

	mu       sync.Mutex
	requests []CertificateRequest
	faults   CertificateFaults
}

// CertificateRequest is one request the API answered.
type CertificateRequest struct {
	Path   string
	MchID  string // from the Authorization header; empty when it did not parse
	Status int
}

// CertificateFaults make the API misbehave the ways tests need; the zero value is a faithful WeChat Pay.
type CertificateFaults struct {
	// Nonce, when set, is written as every encrypt_certificate's nonce (WeChat Pay's are 12 characters).
	Nonce string
	// BadSignature signs the answer over other bytes than the body sent.
	BadSignature bool
	// Probes: the next Probes answers carry a WECHATPAY/SIGNTEST/ probe signature.
	Probes int
}

// NewCertificateAPI serves the certificates of these platforms, each to its own merchant. The merchants'
// API keys are generated now if they were not yet (Platform.Merchant).
func NewCertificateAPI(ps ...*Platform) (*CertificateAPI, error) {
	a := &CertificateAPI{platforms: make(map[string]*Platform, len(ps))}
	for _, p := range ps {
		if _, err := p.Merchant(); err != nil {
			return nil, err
		}
		a.platforms[p.MchID] = p
	}
	return a, nil
}

// SetFaults replaces the faults of the following answers.
func (a *CertificateAPI) SetFaults(f CertificateFaults) {
	a.mu.Lock()
	a.faults = f
	a.mu.Unlock()
}

// Requests lists the requests answered so far, in order.
func (a *CertificateAPI) Requests() []CertificateRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]CertificateRequest(nil), a.requests...)
}

// The answer's shape, as WeChat Pay documents it.
type certificateList struct {
	Data []certificateEntry `json:"data"`
}

type certificateEntry struct {
	SerialNo           string               `json:"serial_no"`
	EffectiveTime      string               `json:"effective_time"`
	ExpireTime         string               `json:"expire_time"`
	EncryptCertificate encryptedCertificate `json:"encrypt_certificate"`
}

type encryptedCertificate struct {
	Algorithm      string `json:"algorithm"`
	AssociatedData string `json:"associated_data"`
	Nonce          string `json:"nonce"`
	Ciphertext     string `json:"ciphertext"`
}

// ServeHTTP implements http.Handler.
func (a *CertificateAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := CertificateRequest{Path: r.URL.Path}
	defer func() {
		a.mu.Lock()
		a.requests = append(a.requests, rec)
		a.mu.Unlock()
	}()
	fail := func(status int, code, message string) {
		rec.Status = status
		writeAPIError(w, status, code, message)
	}
	if r.URL.Path != CertificatesPath && r.URL.Path != GlobalCertificatesPath {
		fail(http.StatusNotFound, "NOT_FOUND", "请求的资源不存在")
		return
	}
	if r.Method != http.MethodGet {
		fail(http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "不支持的请求方法")
		return
	}
	auth, ok := parseAuthorization(r.Header.Get("Authorization"))
	if !ok {
		fail(http.StatusUnauthorized, "SIGN_ERROR", "Authorization不合法")
		return
	}
	rec.MchID = auth.mchid
	p, ok := a.platforms[auth.mchid]
	if !ok {
		fail(http.StatusUnauthorized, "SIGN_ERROR", "商户号不存在")
		return
	}
	m, _ := p.Merchant() // made in NewCertificateAPI
	if auth.serial != m.CertSerial {
		fail(http.StatusUnauthorized, "SIGN_ERROR", "商户证书序列号有误")
		return
	}
	ts, err := strconv.ParseInt(auth.timestamp, 10, 64)
	if err != nil || absDuration(p.now().Sub(time.Unix(ts, 0))) > 5*time.Minute {
		fail(http.StatusUnauthorized, "SIGN_ERROR", "timestamp过期")
		return
	}
	msg := r.Method + "\n" + r.URL.RequestURI() + "\n" + auth.timestamp + "\n" + auth.nonce + "\n" + "\n"
	digest := sha256.Sum256([]byte(msg))
	sig, err := base64.StdEncoding.DecodeString(auth.signature)
	if err != nil || rsa.VerifyPKCS1v15(&m.Key.PublicKey, crypto.SHA256, digest[:], sig) != nil {
		fail(http.StatusUnauthorized, "SIGN_ERROR", "错误的签名，验签失败")
		return
	}

	a.mu.Lock()
	f := a.faults
	probe := a.faults.Probes > 0
	if probe {
		a.faults.Probes--
	}
	a.mu.Unlock()

	all := p.Certificates()
	list := certificateList{Data: make([]certificateEntry, 0, len(all))}
	for _, c := range all {
		nonce := randomToken(12)
		ct, err := p.Encrypt(nonce, "certificate", c.PEM)
		if err != nil {
			fail(http.StatusInternalServerError, "SYSTEM_ERROR", "系统错误")
			return
		}
		if f.Nonce != "" {
			nonce = f.Nonce
		}
		list.Data = append(list.Data, certificateEntry{
			SerialNo:      c.Serial,
			EffectiveTime: c.Cert.NotBefore.In(beijing).Format(time.RFC3339),
			ExpireTime:    c.Cert.NotAfter.In(beijing).Format(time.RFC3339),
			EncryptCertificate: encryptedCertificate{
				Algorithm: "AEAD_AES_256_GCM", AssociatedData: "certificate", Nonce: nonce, Ciphertext: ct,
			},
		})
	}
	body, err := json.Marshal(list)
	if err != nil {
		fail(http.StatusInternalServerError, "SYSTEM_ERROR", "系统错误")
		return
	}
	signed := body
	if f.BadSignature {
		signed = append(append([]byte(nil), body...), ' ')
	}
	newest := all[len(all)-1]
	h, err := signHeaders(newest.Key, newest.Serial, signed, p.now(), probe)
	if err != nil {
		fail(http.StatusInternalServerError, "SYSTEM_ERROR", "系统错误")
		return
	}
	for k, v := range h {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	rec.Status = http.StatusOK
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

type authorization struct {
	mchid, nonce, timestamp, serial, signature string
}

// parseAuthorization reads `WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",timestamp="…",
// serial_no="…",signature="…"`.
func parseAuthorization(v string) (authorization, bool) {
	rest, ok := strings.CutPrefix(v, "WECHATPAY2-SHA256-RSA2048 ")
	if !ok {
		return authorization{}, false
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || len(val) < 2 || val[0] != '"' || val[len(val)-1] != '"' {
			return authorization{}, false
		}
		fields[k] = val[1 : len(val)-1]
	}
	a := authorization{
		mchid: fields["mchid"], nonce: fields["nonce_str"], timestamp: fields["timestamp"],
		serial: fields["serial_no"], signature: fields["signature"],
	}
	if a.mchid == "" || a.nonce == "" || a.timestamp == "" || a.serial == "" || a.signature == "" {
		return authorization{}, false
	}
	return a, true
}

func writeAPIError(w http.ResponseWriter, status int, code, message string) {
	body, _ := json.Marshal(struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{code, message})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
