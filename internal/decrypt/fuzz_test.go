package decrypt_test

import (
	"encoding/base64"
	"errors"
	"testing"

	"github.com/wxpay-events/wxpay-events/internal/decrypt"
)

// FuzzOpen feeds arbitrary resource fields to Open under the 32-byte vector
// key: it must never panic, must fail only with the package's sentinels, and
// must return exactly len(ciphertext)-16 bytes when it succeeds.
func FuzzOpen(f *testing.F) {
	v, _ := loadVectors(f)
	f.Add(decrypt.Algorithm, v.Nonce, v.AssociatedData, v.Ciphertext)
	c := mustNew(f, v.Key)
	sentinels := []error{decrypt.ErrUnknownAlgorithm, decrypt.ErrBadBase64, decrypt.ErrNonceLength, decrypt.ErrAuthentication}
	f.Fuzz(func(t *testing.T, algorithm, nonce, aad, ciphertext string) {
		got, err := c.Open(algorithm, nonce, aad, ciphertext)
		if err != nil {
			if got != nil {
				t.Fatalf("plaintext returned with error %v", err)
			}
			for _, s := range sentinels {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("error %v is none of the package's sentinels", err)
		}
		sealed, derr := base64.StdEncoding.DecodeString(ciphertext)
		if derr != nil {
			t.Fatalf("Open accepted invalid base64: %v", derr)
		}
		if len(got) != len(sealed)-decrypt.TagSize {
			t.Fatalf("plaintext is %d bytes from %d sealed bytes", len(got), len(sealed))
		}
	})
}
