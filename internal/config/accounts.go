package config

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/wechatpay-apiv3/wechatpay-go/utils"
	"gopkg.in/yaml.v3"

	"github.com/wxpay-events/wxpay-events/internal/certs"
	"github.com/wxpay-events/wxpay-events/internal/verify"
)

// Secret is key material that must never reach a log line or an error text.
type Secret []byte

// String hides the secret from fmt and zerolog.
func (Secret) String() string { return "[redacted]" }

// MarshalText hides the secret from encoders.
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// Account is one merchant (or service provider) whose notifications this deployment accepts, with its key
// material loaded and checked.
type Account struct {
	MchID string
	// PublicKeyID and PublicKey: the WeChat Pay public key (public-key mode).
	PublicKeyID string
	PublicKey   *rsa.PublicKey
	// Certificates: static platform certificates, keyed by their serial.
	Certificates []*x509.Certificate
	// PrivateKey and CertSerial: the merchant's own API key and certificate serial, for downloading the
	// platform certificates from WeChat Pay and refreshing them every 24 h (certificate mode only).
	PrivateKey *rsa.PrivateKey
	CertSerial string
	// Region says which WeChat Pay API the certificates are downloaded from: mainland (the default) or
	// global, the cross-border API on apihk.mch.weixin.qq.com.
	Region certs.Region
	// APIBaseURL, when set, replaces the region's API host (scheme://host[:port]): a test server or an
	// egress proxy.
	APIBaseURL string
	// APIv3Key decrypts resources; loaded for the consumer, and for the receiver only when it downloads
	// certificates (the download is encrypted with it).
	APIv3Key Secret
	// Origin says where the account was configured, for messages: "environment" or "accounts[1]".
	Origin string
}

// String names the account without any key material.
func (a Account) String() string { return a.MchID }

// KeySet gives the account's static keys to the verifier; certificate downloading is wired by the caller.
func (a Account) KeySet() verify.KeySet {
	ks := verify.KeySet{PublicKeyID: a.PublicKeyID, PublicKey: a.PublicKey}
	if len(a.Certificates) > 0 {
		ks.Certificates = verify.StaticCertificates(a.Certificates...)
	}
	return ks
}

// accountSpec is an account as written in YAML or the environment, before its files are read.
type accountSpec struct {
	MchID             string   `yaml:"mchid"`
	APIv3KeyFile      string   `yaml:"apiv3_key_file"`
	PublicKeyID       string   `yaml:"public_key_id"`
	PublicKeyFile     string   `yaml:"public_key_file"`
	PlatformCertFiles []string `yaml:"platform_cert_files"`
	PrivateKeyFile    string   `yaml:"private_key_file"`
	CertSerial        string   `yaml:"cert_serial"`
	Region            string   `yaml:"region"`
	APIBaseURL        string   `yaml:"api_base_url"`
}

type accountsFile struct {
	Accounts []accountSpec `yaml:"accounts"`
}

var (
	mchidPattern = regexp.MustCompile(`^[0-9]{1,32}$`)
	// publicKeyIDPattern: WeChat Pay public key ids are PUB_KEY_ID_ and digits
	// (PUB_KEY_ID_0000000000000024101100397200000006 in the official example).
	publicKeyIDPattern = regexp.MustCompile(`^PUB_KEY_ID_[0-9]{1,64}$`)
)

// clipValue keeps a configured value short in an error message.
func clipValue(v string) string {
	if len(v) > 48 {
		return v[:48] + "…"
	}
	return v
}

// accounts registers the account variables and returns a loader to run after flag parsing.
func (s *source) accounts(needAPIv3Key bool) func() []Account {
	var file string
	var env accountSpec
	var certs string
	s.str(&file, "WECHATPAY_ACCOUNTS_FILE", "", "YAML file listing merchant accounts")
	s.str(&env.MchID, "WECHATPAY_MCHID", "", "single-account merchant id")
	s.str(&env.PublicKeyID, "WECHATPAY_PUBLIC_KEY_ID", "", "WeChat Pay public key id (PUB_KEY_ID_…)")
	s.str(&env.PublicKeyFile, "WECHATPAY_PUBLIC_KEY_FILE", "", "WeChat Pay public key PEM file")
	s.str(&certs, "WECHATPAY_PLATFORM_CERT_FILES", "", "platform certificate PEM files, comma-separated")
	s.str(&env.APIv3KeyFile, "WECHATPAY_APIV3_KEY_FILE", "", "file holding the 32-byte APIv3 key")
	s.str(&env.PrivateKeyFile, "WECHATPAY_PRIVATE_KEY_FILE", "", "merchant API private key PEM, to download platform certificates")
	s.str(&env.CertSerial, "WECHATPAY_CERT_SERIAL", "", "merchant API certificate serial, with WECHATPAY_PRIVATE_KEY_FILE")
	s.str(&env.Region, "WECHATPAY_REGION", "", "WeChat Pay API region of the certificate download: mainland (default) or global (cross-border)")
	s.str(&env.APIBaseURL, "WECHATPAY_API_BASE_URL", "", "WeChat Pay API host replacing the region's, scheme://host[:port] (tests, proxies)")
	return func() []Account {
		env.PlatformCertFiles = splitList(certs)
		var specs []accountSpec
		var names []func(field string) string
		switch {
		case file != "" && env.MchID != "":
			s.errs = append(s.errs, fmt.Sprintf("%s and %s are both set: configure accounts one way", s.describe("WECHATPAY_ACCOUNTS_FILE"), s.describe("WECHATPAY_MCHID")))
			return nil
		case file != "":
			f, err := readAccountsFile(file)
			if err != nil {
				s.errs = append(s.errs, fmt.Sprintf("%s: %v", s.describe("WECHATPAY_ACCOUNTS_FILE"), err))
				return nil
			}
			for i := range f.Accounts {
				specs = append(specs, f.Accounts[i])
				prefix := fmt.Sprintf("%s: accounts[%d].", file, i)
				names = append(names, func(field string) string { return prefix + field })
			}
			if len(specs) == 0 {
				s.errs = append(s.errs, fmt.Sprintf("%s: %s lists no account", s.describe("WECHATPAY_ACCOUNTS_FILE"), file))
			}
		case env.MchID != "":
			specs = []accountSpec{env}
			envNames := map[string]string{
				"mchid": "WECHATPAY_MCHID", "apiv3_key_file": "WECHATPAY_APIV3_KEY_FILE", "public_key_id": "WECHATPAY_PUBLIC_KEY_ID",
				"public_key_file": "WECHATPAY_PUBLIC_KEY_FILE", "platform_cert_files": "WECHATPAY_PLATFORM_CERT_FILES",
				"private_key_file": "WECHATPAY_PRIVATE_KEY_FILE", "cert_serial": "WECHATPAY_CERT_SERIAL",
				"region": "WECHATPAY_REGION", "api_base_url": "WECHATPAY_API_BASE_URL",
			}
			names = append(names, func(field string) string { return envNames[field] })
		default:
			s.errs = append(s.errs, "no merchant account: set WECHATPAY_MCHID (with its key variables) or WECHATPAY_ACCOUNTS_FILE")
			return nil
		}
		seen := map[string]bool{}
		var out []Account
		for i, spec := range specs {
			a, errs := loadAccount(spec, names[i], needAPIv3Key)
			s.errs = append(s.errs, errs...)
			if seen[spec.MchID] {
				s.errs = append(s.errs, fmt.Sprintf("%s: %s appears twice", names[i]("mchid"), spec.MchID))
			}
			seen[spec.MchID] = true
			a.Origin = strings.TrimSuffix(names[i]("mchid"), ".mchid")
			out = append(out, a)
		}
		return out
	}
}

func readAccountsFile(path string) (accountsFile, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return accountsFile{}, err
	}
	var f accountsFile
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true) // a misspelt field is an error, not a silently missing key
	if err := dec.Decode(&f); err != nil {
		return accountsFile{}, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// loadAccount checks one account and reads its files; every problem names its field.
func loadAccount(spec accountSpec, name func(string) string, needAPIv3Key bool) (Account, []string) {
	var errs []string
	bad := func(field, format string, args ...any) {
		errs = append(errs, name(field)+": "+fmt.Sprintf(format, args...))
	}
	a := Account{MchID: spec.MchID, PublicKeyID: strings.TrimSpace(spec.PublicKeyID), CertSerial: strings.TrimSpace(spec.CertSerial),
		APIBaseURL: strings.TrimSpace(spec.APIBaseURL)}
	if !mchidPattern.MatchString(spec.MchID) {
		bad("mchid", "%q is not a merchant id (digits only)", spec.MchID)
	}
	var err error
	if a.Region, err = certs.ParseRegion(spec.Region); err != nil {
		bad("region", "%q is not a region: use %s (api.mch.weixin.qq.com) or %s (cross-border, apihk.mch.weixin.qq.com)",
			spec.Region, certs.RegionMainland, certs.RegionGlobal)
	}
	if a.APIBaseURL != "" {
		if err := certs.CheckBaseURL(a.APIBaseURL); err != nil {
			bad("api_base_url", "%v", err)
		}
	}
	if a.PublicKeyID != "" && !publicKeyIDPattern.MatchString(a.PublicKeyID) {
		bad("public_key_id", "%q is not a WeChat Pay public key id: PUB_KEY_ID_ followed by digits, as shown next to the key in the merchant platform", clipValue(a.PublicKeyID))
	}
	switch {
	case a.PublicKeyID != "" && spec.PublicKeyFile == "":
		bad("public_key_file", "missing: the public key id %s needs its PEM file", a.PublicKeyID)
	case a.PublicKeyID == "" && spec.PublicKeyFile != "":
		bad("public_key_id", "missing: the public key file needs its id (PUB_KEY_ID_…, shown next to the key in the merchant platform)")
	case spec.PublicKeyFile != "":
		if raw, err := os.ReadFile(spec.PublicKeyFile); err != nil {
			bad("public_key_file", "%v", err)
		} else if a.PublicKey, err = verify.LoadPublicKeyPEM(raw); err != nil {
			bad("public_key_file", "%s: %v", spec.PublicKeyFile, err)
		}
	}
	for _, path := range spec.PlatformCertFiles {
		raw, err := os.ReadFile(path)
		if err != nil {
			bad("platform_cert_files", "%v", err)
			continue
		}
		c, _, err := verify.LoadCertificatePEM(raw)
		if err != nil {
			bad("platform_cert_files", "%s: %v", path, err)
			continue
		}
		a.Certificates = append(a.Certificates, c)
	}
	if spec.PrivateKeyFile != "" {
		if a.CertSerial == "" {
			bad("cert_serial", "missing: downloading platform certificates needs the merchant certificate serial")
		}
		if spec.APIv3KeyFile == "" {
			bad("apiv3_key_file", "missing: downloaded platform certificates are encrypted with the APIv3 key")
		}
		if raw, err := os.ReadFile(spec.PrivateKeyFile); err != nil {
			bad("private_key_file", "%v", err)
		} else if a.PrivateKey, err = utils.LoadPrivateKey(string(raw)); err != nil {
			bad("private_key_file", "%s: not a PEM RSA private key", spec.PrivateKeyFile)
		}
	}
	// The consumer only decrypts: it needs no verification key (the receiver verified before storing).
	if !needAPIv3Key && spec.PublicKeyFile == "" && spec.PublicKeyID == "" && len(spec.PlatformCertFiles) == 0 && spec.PrivateKeyFile == "" {
		bad("public_key_file", "no key to verify signatures: configure the WeChat Pay public key, platform certificates, or a private key to download them")
	}
	if spec.APIv3KeyFile != "" && (needAPIv3Key || spec.PrivateKeyFile != "") {
		key, err := ReadAPIv3Key(spec.APIv3KeyFile)
		if err != nil {
			bad("apiv3_key_file", "%v", err)
		}
		a.APIv3Key = key
	} else if needAPIv3Key {
		bad("apiv3_key_file", "missing: the consumer decrypts notifications with the APIv3 key")
	}
	return a, errs
}

// ReadAPIv3Key reads an APIv3 key file: exactly 32 bytes, a trailing line break tolerated. The error never
// contains the key.
func ReadAPIv3Key(path string) (Secret, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key := bytes.TrimRight(raw, "\r\n")
	if len(key) != 32 {
		return nil, fmt.Errorf("%s holds %d bytes; an APIv3 key is exactly 32 (AEAD_AES_256_GCM)", path, len(key))
	}
	return Secret(key), nil
}
