package decrypt_test

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/wechatpay-apiv3/wechatpay-go/utils"

	"github.com/wxpay-events/wxpay-events/internal/decrypt"
)

// vector is one row of testdata/aes-gcm.json. A row either gives the exact
// Plaintext or, when the plaintext is a PEM platform certificate (as in a
// GET /v3/certificates response), only the CertificateSerial it must carry.
type vector struct {
	Source            string `json:"source"`
	Key               string `json:"key"`
	Nonce             string `json:"nonce"`
	AssociatedData    string `json:"associated_data"`
	Ciphertext        string `json:"ciphertext"`
	Plaintext         string `json:"plaintext"`
	CertificateSerial string `json:"certificate_serial"`
}

func readVectors(t testing.TB) []vector {
	t.Helper()
	raw, err := os.ReadFile("testdata/aes-gcm.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Vectors []vector `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Vectors
}

// loadVectors returns the plaintext rows with a 32-byte and a 16-byte key.
// Certificate rows are left to TestVectorCertificateDecrypts.
func loadVectors(t testing.TB) (key32, key16 vector) {
	t.Helper()
	vectors := readVectors(t)
	for _, v := range vectors {
		if v.CertificateSerial != "" {
			continue
		}
		switch len(v.Key) {
		case 32:
			key32 = v
		case 16:
			key16 = v
		}
	}
	if key32.Key == "" || key16.Key == "" {
		t.Fatalf("testdata/aes-gcm.json: want one 32-byte and one 16-byte key row, got %d rows", len(vectors))
	}
	return key32, key16
}

func mustNew(t testing.TB, key string) *decrypt.Cipher {
	t.Helper()
	c, err := decrypt.New([]byte(key))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func TestVector32ByteKeyDecrypts(t *testing.T) {
	v, _ := loadVectors(t)
	got, err := mustNew(t, v.Key).Open(decrypt.Algorithm, v.Nonce, v.AssociatedData, v.Ciphertext)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if string(got) != v.Plaintext {
		t.Fatalf("Open = %q, want %q", got, v.Plaintext)
	}
}

// TestVectorCertificateDecrypts opens the encrypted platform certificates of
// the certificate rows and checks the serial WeChat Pay would put in
// Wechatpay-Serial, formatted as wechatpay-go's GetCertificateSerialNumber does.
func TestVectorCertificateDecrypts(t *testing.T) {
	var n int
	for _, v := range readVectors(t) {
		if v.CertificateSerial == "" {
			continue
		}
		n++
		t.Run(v.CertificateSerial, func(t *testing.T) {
			got, err := mustNew(t, v.Key).Open(decrypt.Algorithm, v.Nonce, v.AssociatedData, v.Ciphertext)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			block, rest := pem.Decode(got)
			if block == nil || block.Type != "CERTIFICATE" {
				t.Fatalf("plaintext is not a PEM CERTIFICATE block: %.40q", got)
			}
			if len(strings.TrimSpace(string(rest))) != 0 {
				t.Fatalf("%d bytes after the PEM block", len(rest))
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatalf("x509.ParseCertificate: %v", err)
			}
			if serial := fmt.Sprintf("%X", cert.SerialNumber.Bytes()); serial != v.CertificateSerial {
				t.Fatalf("certificate serial = %s, want %s", serial, v.CertificateSerial)
			}
		})
	}
	if n == 0 {
		t.Fatal("testdata/aes-gcm.json has no certificate_serial row")
	}
}

func TestNewKeyLength(t *testing.T) {
	_, v16 := loadVectors(t)
	tests := []struct {
		name    string
		key     []byte
		wantErr error
	}{
		{"16-byte vector key (AES-128)", []byte(v16.Key), decrypt.ErrKeyLength},
		{"24 bytes", make([]byte, 24), decrypt.ErrKeyLength},
		{"31 bytes", make([]byte, 31), decrypt.ErrKeyLength},
		{"33 bytes", make([]byte, 33), decrypt.ErrKeyLength},
		{"empty", nil, decrypt.ErrKeyLength},
		{"32 bytes", make([]byte, 32), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := decrypt.New(tt.key)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("New err = %v, want %v", err, tt.wantErr)
			}
			if (c == nil) == (tt.wantErr == nil) {
				t.Fatalf("New returned cipher %v with err %v", c, err)
			}
			if err != nil && len(tt.key) > 0 && strings.Contains(err.Error(), string(tt.key)) {
				t.Fatalf("error text contains the key: %v", err)
			}
		})
	}
}

// TestWechatpayGoAccepts16ByteKey documents why this package does not
// delegate to wechatpay-go: its helper runs AES-128-GCM with the 16-byte key
// that New refuses.
func TestWechatpayGoAccepts16ByteKey(t *testing.T) {
	_, v := loadVectors(t)
	got, err := utils.DecryptAES256GCM(v.Key, v.AssociatedData, v.Nonce, v.Ciphertext)
	if err != nil {
		t.Fatalf("utils.DecryptAES256GCM: %v", err)
	}
	if got != v.Plaintext {
		t.Fatalf("utils.DecryptAES256GCM = %q, want %q", got, v.Plaintext)
	}
	if _, err := decrypt.New([]byte(v.Key)); !errors.Is(err, decrypt.ErrKeyLength) {
		t.Fatalf("decrypt.New(16-byte key) err = %v, want ErrKeyLength", err)
	}
}

func TestOpenFailures(t *testing.T) {
	v, _ := loadVectors(t)
	sealed, err := base64.StdEncoding.DecodeString(v.Ciphertext)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) string {
		b := append([]byte(nil), sealed...)
		b[i] ^= 0x01
		return base64.StdEncoding.EncodeToString(b)
	}
	good := mustNew(t, v.Key)
	wrongKey := mustNew(t, strings.Repeat("k", 32))

	tests := []struct {
		name       string
		c          *decrypt.Cipher
		algorithm  string
		nonce      string
		aad        string
		ciphertext string
		wantErr    error
	}{
		{"tampered first ciphertext byte", good, decrypt.Algorithm, v.Nonce, v.AssociatedData, flip(0), decrypt.ErrAuthentication},
		{"tampered tag byte", good, decrypt.Algorithm, v.Nonce, v.AssociatedData, flip(len(sealed) - 1), decrypt.ErrAuthentication},
		{"wrong key", wrongKey, decrypt.Algorithm, v.Nonce, v.AssociatedData, v.Ciphertext, decrypt.ErrAuthentication},
		{"wrong associated data", good, decrypt.Algorithm, v.Nonce, "transaction", v.Ciphertext, decrypt.ErrAuthentication},
		{"empty associated data", good, decrypt.Algorithm, v.Nonce, "", v.Ciphertext, decrypt.ErrAuthentication},
		{"wrong nonce of right length", good, decrypt.Algorithm, "000000000000", v.AssociatedData, v.Ciphertext, decrypt.ErrAuthentication},
		{"11-byte nonce", good, decrypt.Algorithm, v.Nonce[:11], v.AssociatedData, v.Ciphertext, decrypt.ErrNonceLength},
		{"13-byte nonce", good, decrypt.Algorithm, v.Nonce + "x", v.AssociatedData, v.Ciphertext, decrypt.ErrNonceLength},
		{"16-byte nonce", good, decrypt.Algorithm, "0123456789abcdef", v.AssociatedData, v.Ciphertext, decrypt.ErrNonceLength},
		{"empty nonce", good, decrypt.Algorithm, "", v.AssociatedData, v.Ciphertext, decrypt.ErrNonceLength},
		{"bad base64", good, decrypt.Algorithm, v.Nonce, v.AssociatedData, "not*base64!", decrypt.ErrBadBase64},
		{"url-safe base64", good, decrypt.Algorithm, v.Nonce, v.AssociatedData, "-_-_", decrypt.ErrBadBase64},
		{"shorter than the tag", good, decrypt.Algorithm, v.Nonce, v.AssociatedData, base64.StdEncoding.EncodeToString(sealed[:15]), decrypt.ErrBadBase64},
		{"empty ciphertext", good, decrypt.Algorithm, v.Nonce, v.AssociatedData, "", decrypt.ErrBadBase64},
		{"unknown algorithm", good, "AEAD_SM4_GCM", v.Nonce, v.AssociatedData, v.Ciphertext, decrypt.ErrUnknownAlgorithm},
		{"algorithm in lower case", good, "aead_aes_256_gcm", v.Nonce, v.AssociatedData, v.Ciphertext, decrypt.ErrUnknownAlgorithm},
		{"empty algorithm", good, "", v.Nonce, v.AssociatedData, v.Ciphertext, decrypt.ErrUnknownAlgorithm},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.c.Open(tt.algorithm, tt.nonce, tt.aad, tt.ciphertext)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Open err = %v, want %v", err, tt.wantErr)
			}
			if got != nil {
				t.Fatalf("Open returned plaintext %q alongside an error", got)
			}
		})
	}
}

// seal encrypts plaintext the way WeChat Pay does, for round trips and benchmarks.
func seal(t testing.TB, key, nonce, aad string, plaintext []byte) string {
	t.Helper()
	block, err := aes.NewCipher([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(aead.Seal(nil, []byte(nonce), plaintext, []byte(aad)))
}

func TestOpenRoundTripEmptyAAD(t *testing.T) {
	// The parking notification samples carry associated_data "".
	const key, nonce = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb", "fdasflkja484"
	want := `{"parking_id":"5K8264ILTKCH16CQ250"}`
	got, err := mustNew(t, key).Open(decrypt.Algorithm, nonce, "", seal(t, key, nonce, "", []byte(want)))
	if err != nil || string(got) != want {
		t.Fatalf("Open = %q, %v; want %q", got, err, want)
	}
}

func TestOpenConcurrent(t *testing.T) {
	v, _ := loadVectors(t)
	c := mustNew(t, v.Key)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 50 {
				got, err := c.Open(decrypt.Algorithm, v.Nonce, v.AssociatedData, v.Ciphertext)
				if err != nil || string(got) != v.Plaintext {
					t.Errorf("Open = %q, %v", got, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkOpen(b *testing.B) {
	const key, nonce, aad = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb", "fdasflkja484", "transaction"
	// About the size of a TRANSACTION.SUCCESS resource with one promotion.
	plaintext := []byte(strings.Repeat(`{"transaction_id":"4200000000000000000000000000"}`, 20))
	ct := seal(b, key, nonce, aad, plaintext)
	c := mustNew(b, key)
	b.SetBytes(int64(len(plaintext)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Open(decrypt.Algorithm, nonce, aad, ct); err != nil {
			b.Fatal(err)
		}
	}
}
