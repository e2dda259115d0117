// Package decrypt opens the AEAD_AES_256_GCM-encrypted resource of a WeChat Pay
// APIv3 callback notification with the merchant's 32-byte APIv3 key.
//
// It does not delegate to wechatpay-go's utils.DecryptAES256GCM: that helper
// accepts 16- and 24-byte keys (silently running AES-128/192-GCM) and panics on
// a nonce that is not 12 bytes long. Every error returned here is permanent:
// retrying the same input gives the same answer.
package decrypt

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
)

// Algorithm is the only resource.algorithm value WeChat Pay APIv3 uses for
// notifications (RFC 5116 AEAD_AES_256_GCM).
const Algorithm = "AEAD_AES_256_GCM"

const (
	// KeySize is the length in bytes of an APIv3 key.
	KeySize = 32
	// NonceSize is the length in bytes of resource.nonce.
	NonceSize = 12
	// TagSize is the length in bytes of the GCM tag appended to the ciphertext.
	TagSize = 16
)

var (
	// ErrKeyLength means the APIv3 key is not exactly KeySize bytes long. It is a
	// configuration error; the message states the length found, never the key.
	ErrKeyLength = errors.New("decrypt: APIv3 key must be 32 bytes")
	// ErrUnknownAlgorithm means resource.algorithm is not AEAD_AES_256_GCM.
	ErrUnknownAlgorithm = errors.New("decrypt: unsupported resource algorithm")
	// ErrBadBase64 means resource.ciphertext is not standard base64, or too short
	// to hold the 16-byte GCM tag.
	ErrBadBase64 = errors.New("decrypt: ciphertext is not valid base64 of ciphertext and tag")
	// ErrNonceLength means resource.nonce is not exactly NonceSize bytes long.
	ErrNonceLength = errors.New("decrypt: nonce must be 12 bytes")
	// ErrAuthentication means GCM authentication failed: the APIv3 key is wrong,
	// or the ciphertext, nonce or associated data were altered.
	ErrAuthentication = errors.New("decrypt: authentication failed (wrong APIv3 key, or altered ciphertext, nonce or associated data)")
)

// Cipher decrypts notification resources with one merchant's APIv3 key. The
// AEAD is built once, in New; a Cipher is safe for concurrent use.
type Cipher struct {
	aead cipher.AEAD
}

// New returns a Cipher for apiV3Key, which must be exactly KeySize bytes
// (the raw ASCII key as configured in the merchant platform), else ErrKeyLength.
func New(apiV3Key []byte) (*Cipher, error) {
	if len(apiV3Key) != KeySize {
		return nil, fmt.Errorf("%w, got %d bytes", ErrKeyLength, len(apiV3Key))
	}
	block, err := aes.NewCipher(apiV3Key)
	if err != nil { // unreachable with a 32-byte key
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil { // unreachable with the standard nonce and tag sizes
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	return &Cipher{aead: aead}, nil
}

// Open authenticates and decrypts a notification resource. Its arguments are
// the resource's algorithm, nonce, associated_data and ciphertext fields as
// they appear in the envelope; ciphertextB64 is the standard base64 of the
// ciphertext followed by the 16-byte tag.
func (c *Cipher) Open(algorithm, nonce, associatedData, ciphertextB64 string) ([]byte, error) {
	if algorithm != Algorithm {
		return nil, fmt.Errorf("%w: %.32q", ErrUnknownAlgorithm, algorithm)
	}
	// cipher.AEAD.Open panics on a nonce of the wrong size: check it first.
	if len(nonce) != NonceSize {
		return nil, fmt.Errorf("%w, got %d bytes", ErrNonceLength, len(nonce))
	}
	sealed, err := base64.StdEncoding.DecodeString(ciphertextB64)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadBase64, err)
	}
	if len(sealed) < TagSize {
		return nil, fmt.Errorf("%w: %d bytes decoded, need at least %d", ErrBadBase64, len(sealed), TagSize)
	}
	plaintext, err := c.aead.Open(nil, []byte(nonce), sealed, []byte(associatedData))
	if err != nil {
		return nil, ErrAuthentication
	}
	return plaintext, nil
}
