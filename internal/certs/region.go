package certs

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Region says which WeChat Pay API serves an account: mainland merchants download their platform
// certificates from api.mch.weixin.qq.com/v3/certificates, cross-border (global) merchants from
// apihk.mch.weixin.qq.com/v3/global/certificates (WeChat Pay's cross-border APP guide, "下载平台证书").
type Region string

// Regions.
const (
	RegionMainland Region = "mainland"
	RegionGlobal   Region = "global"
)

// Default API hosts of the regions.
const (
	MainlandBaseURL = "https://api.mch.weixin.qq.com"
	GlobalBaseURL   = "https://apihk.mch.weixin.qq.com"
)

// ErrBadRegion and ErrBadBaseURL reject a configuration; config names the field around them.
var (
	ErrBadRegion  = errors.New("certs: unknown region")
	ErrBadBaseURL = errors.New("certs: not an API base URL")
)

// ParseRegion reads a configured region; empty means mainland, the region of almost every merchant.
func ParseRegion(s string) (Region, error) {
	switch r := Region(strings.ToLower(strings.TrimSpace(s))); r {
	case "":
		return RegionMainland, nil
	case RegionMainland, RegionGlobal:
		return r, nil
	}
	return "", fmt.Errorf("%w %q: use %s or %s", ErrBadRegion, s, RegionMainland, RegionGlobal)
}

// Path is the certificate API's path in the region.
func (r Region) Path() string {
	if r == RegionGlobal {
		return "/v3/global/certificates"
	}
	return "/v3/certificates"
}

// BaseURL is the region's API host.
func (r Region) BaseURL() string {
	if r == RegionGlobal {
		return GlobalBaseURL
	}
	return MainlandBaseURL
}

// CheckBaseURL accepts an absolute http(s) URL naming only a host (and port). A path is refused because
// the request signature covers the request path: a proxy that rewrote it would break the signature, and a
// typo such as ".../v3" would sign and request the wrong path.
func CheckBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%w: %q does not parse", ErrBadBaseURL, s)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%w: %q is not an absolute http(s) URL", ErrBadBaseURL, s)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%w: %q names no host", ErrBadBaseURL, s)
	case u.User != nil:
		return fmt.Errorf("%w: %q carries credentials; requests are signed with the merchant key instead", ErrBadBaseURL, redact(u))
	case strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("%w: %q must be scheme://host[:port] only (the signed request path is fixed by the region)", ErrBadBaseURL, s)
	}
	return nil
}

func redact(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}
