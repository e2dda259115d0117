package wechatsim

import (
	"bufio"
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// EnvFile is where Save writes the account's configuration as KEY=value lines, in dir.
func EnvFile(dir, mchid string) string { return filepath.Join(dir, mchid+".env") }

// Save writes the platform's files into dir (created if missing) with absolute paths, and EnvFile: the
// configuration a receiver and consumer need for this merchant, which LoadPlatform reads back.
func (p *Platform) Save(dir string) (Files, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Files{}, fmt.Errorf("wechatsim: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return Files{}, fmt.Errorf("wechatsim: %w", err)
	}
	f, err := p.WriteFiles(abs)
	if err != nil {
		return Files{}, err
	}
	env := p.Env(f)
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Simulated WeChat Pay account %s (wxpay-events test keys, not a real merchant).\n", p.MchID)
	fmt.Fprintf(&b, "# The platform private key %s lets the simulator sign like WeChat Pay.\n", f.PrivateKeyFile)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, env[k])
	}
	if err := os.WriteFile(EnvFile(abs, p.MchID), b.Bytes(), 0o600); err != nil {
		return Files{}, fmt.Errorf("wechatsim: %w", err)
	}
	return f, nil
}

// LoadPlatform reads back the platform Save wrote into dir for mchid. The error wraps fs.ErrNotExist when
// dir holds no platform for mchid.
func LoadPlatform(dir, mchid string) (*Platform, Files, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, Files{}, fmt.Errorf("wechatsim: %w", err)
	}
	env, err := readEnvFile(EnvFile(abs, mchid))
	if err != nil {
		return nil, Files{}, err
	}
	f := Files{
		CertFile:       filepath.Join(abs, mchid+"-platform-cert.pem"),
		PublicKeyFile:  filepath.Join(abs, mchid+"-wechatpay-public-key.pem"),
		APIv3KeyFile:   filepath.Join(abs, mchid+"-apiv3.key"),
		PrivateKeyFile: filepath.Join(abs, mchid+"-platform-private-key.pem"),
	}
	p := &Platform{MchID: mchid, PublicKeyID: env["WECHATPAY_PUBLIC_KEY_ID"]}
	if !strings.HasPrefix(p.PublicKeyID, "PUB_KEY_ID_") {
		return nil, Files{}, fmt.Errorf("wechatsim: %s: WECHATPAY_PUBLIC_KEY_ID is missing or not a PUB_KEY_ID_…", EnvFile(abs, mchid))
	}
	read := func(path string) []byte {
		if err != nil {
			return nil
		}
		var b []byte
		b, err = os.ReadFile(path)
		if err != nil {
			err = fmt.Errorf("wechatsim: %w", err)
		}
		return b
	}
	p.PrivatePEM, p.CertPEM, p.PublicPEM = read(f.PrivateKeyFile), read(f.CertFile), read(f.PublicKeyFile)
	p.APIv3Key = bytes.TrimRight(read(f.APIv3KeyFile), "\r\n")
	if err != nil {
		return nil, Files{}, err
	}
	if len(p.APIv3Key) != 32 {
		return nil, Files{}, fmt.Errorf("wechatsim: %s holds %d bytes, want 32", f.APIv3KeyFile, len(p.APIv3Key))
	}
	if p.Key, err = parsePrivateKey(p.PrivatePEM); err != nil {
		return nil, Files{}, fmt.Errorf("wechatsim: %s: %w", f.PrivateKeyFile, err)
	}
	block, _ := pem.Decode(p.CertPEM)
	if block == nil {
		return nil, Files{}, fmt.Errorf("wechatsim: %s: no PEM certificate", f.CertFile)
	}
	if p.Cert, err = x509.ParseCertificate(block.Bytes); err != nil {
		return nil, Files{}, fmt.Errorf("wechatsim: %s: %w", f.CertFile, err)
	}
	if pub, ok := p.Cert.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&p.Key.PublicKey) {
		return nil, Files{}, fmt.Errorf("wechatsim: %s does not match %s", f.CertFile, f.PrivateKeyFile)
	}
	p.CertSerial = fmt.Sprintf("%X", p.Cert.SerialNumber.Bytes())
	p.initState()
	return p, f, nil
}

func parsePrivateKey(raw []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("not an RSA private key")
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an RSA private key")
	}
	return rk, nil
}

// readEnvFile reads KEY=value lines; blank lines, comments and a leading "export " are allowed.
func readEnvFile(path string) (map[string]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("wechatsim: %w", err)
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if ok {
			env[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return env, nil
}
