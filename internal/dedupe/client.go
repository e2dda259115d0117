package dedupe

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ClientOptions selects the Redis deployment. Set URL for a single node, or
// Addrs with MasterName for Sentinel, or several Addrs for Cluster. The
// comments name the environment variables the programs read them from.
type ClientOptions struct {
	// URL is a redis:// or rediss:// URL (REDIS_URL). Plain, it is a single
	// node in the form redis.ParseURL accepts: credentials, database and
	// options such as ?dial_timeout=3s included. With ?master_name= it is a
	// Sentinel deployment in the form redis.ParseFailoverURL accepts (host and
	// ?addr= are sentinels, the userinfo their password, ?password= the data
	// nodes'); with ?addr= and no master name a Cluster (redis.ParseClusterURL).
	URL string
	// Addrs are host:port addresses (REDIS_ADDRS): the sentinels when
	// MasterName is set, else two or more Cluster seed nodes.
	Addrs []string
	// MasterName is the Sentinel master set name (REDIS_MASTER_NAME).
	MasterName string
	// Password authenticates to the data nodes (REDIS_PASSWORD).
	Password string
	// SentinelPassword authenticates to the sentinels (REDIS_SENTINEL_PASSWORD).
	SentinelPassword string
}

// NewUniversalClient returns a client for the deployment o describes, without
// connecting. It reports every inconsistency in o at once, each naming its
// environment variable. The client honours the deadline of the context passed
// to each call, so a caller's timeout bounds a call to an unreachable Redis.
func NewUniversalClient(o ClientOptions) (redis.UniversalClient, error) {
	var errs []error
	for i, a := range o.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil || strings.TrimSpace(a) != a {
			errs = append(errs, fmt.Errorf("REDIS_ADDRS: entry %d %q is not host:port", i+1, a))
		}
	}
	switch {
	case o.URL != "" && (len(o.Addrs) > 0 || o.MasterName != ""):
		errs = append(errs, errors.New("REDIS_URL is set together with REDIS_ADDRS or REDIS_MASTER_NAME: "+
			"use REDIS_URL for a single node, or REDIS_ADDRS (with REDIS_MASTER_NAME for Sentinel) for Sentinel or Cluster"))
	case o.URL != "":
		return fromURL(o)
	case o.MasterName != "" && len(o.Addrs) == 0:
		errs = append(errs, errors.New("REDIS_MASTER_NAME is set but REDIS_ADDRS is empty: list the Sentinel addresses"))
	case o.MasterName == "" && len(o.Addrs) == 1:
		errs = append(errs, fmt.Errorf("REDIS_ADDRS has one address and REDIS_MASTER_NAME is empty: "+
			"use REDIS_URL=redis://%s for a single node, set REDIS_MASTER_NAME for Sentinel, or list two or more Cluster nodes", o.Addrs[0]))
	case len(o.Addrs) == 0:
		errs = append(errs, errors.New("no Redis configured: set REDIS_URL, or REDIS_ADDRS (with REDIS_MASTER_NAME for Sentinel)"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if o.MasterName != "" {
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:            o.MasterName,
			SentinelAddrs:         o.Addrs,
			Password:              o.Password,
			SentinelPassword:      o.SentinelPassword,
			ContextTimeoutEnabled: true,
		}), nil
	}
	if o.SentinelPassword != "" {
		return nil, errors.New("REDIS_SENTINEL_PASSWORD is set but REDIS_MASTER_NAME is empty: a sentinel password belongs to a Sentinel deployment")
	}
	return redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                 o.Addrs,
		Password:              o.Password,
		ContextTimeoutEnabled: true,
	}), nil
}

// fromURL builds the client REDIS_URL describes: a Sentinel deployment when it names a master, a
// Cluster when it lists further addresses, else one node. REDIS_PASSWORD and REDIS_SENTINEL_PASSWORD
// fill in a password the URL leaves out; giving one in both places is refused rather than guessed.
func fromURL(o ClientOptions) (redis.UniversalClient, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", withoutURL(err))
	}
	q := u.Query()
	urlUserPassword := ""
	if u.User != nil {
		urlUserPassword, _ = u.User.Password()
	}
	switch {
	case q.Has("master_name"):
		opt, err := redis.ParseFailoverURL(o.URL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL (Sentinel form, ?master_name=): %w", withoutURL(err))
		}
		if opt.Password, err = onePassword(opt.Password, o.Password, "the URL's password= parameter", "REDIS_PASSWORD"); err != nil {
			return nil, err
		}
		if opt.SentinelPassword, err = onePassword(opt.SentinelPassword, o.SentinelPassword, "the URL's userinfo", "REDIS_SENTINEL_PASSWORD"); err != nil {
			return nil, err
		}
		opt.ContextTimeoutEnabled = true
		return redis.NewFailoverClient(opt), nil
	case o.SentinelPassword != "":
		return nil, errors.New("REDIS_SENTINEL_PASSWORD is set but REDIS_URL names no Sentinel master (?master_name=)")
	case q.Has("addr"):
		opt, err := redis.ParseClusterURL(o.URL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL (Cluster form, ?addr=): %w", withoutURL(err))
		}
		if opt.Password, err = onePassword(urlUserPassword, o.Password, "the URL's userinfo", "REDIS_PASSWORD"); err != nil {
			return nil, err
		}
		opt.ContextTimeoutEnabled = true
		return redis.NewClusterClient(opt), nil
	}
	opt, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", withoutURL(err))
	}
	if opt.Password, err = onePassword(opt.Password, o.Password, "the URL's userinfo", "REDIS_PASSWORD"); err != nil {
		return nil, err
	}
	opt.ContextTimeoutEnabled = true
	return redis.NewClient(opt), nil
}

// onePassword is whichever of the URL's and the variable's password is set; both set is an error.
func onePassword(fromURL, fromVar, urlPart, variable string) (string, error) {
	if fromURL != "" && fromVar != "" {
		return "", fmt.Errorf("REDIS_URL has a password (%s) and %s is set too: give it once", urlPart, variable)
	}
	if fromURL != "" {
		return fromURL, nil
	}
	return fromVar, nil
}

// withoutURL drops the URL that url.Parse puts in its errors, since a
// REDIS_URL may carry a password.
func withoutURL(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}
