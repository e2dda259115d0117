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
	// URL is a redis:// or rediss:// URL for a single node (REDIS_URL), in
	// the form redis.ParseURL accepts: credentials, database and options
	// such as ?dial_timeout=3s included.
	URL string
	// Addrs are host:port addresses (REDIS_ADDRS): the sentinels when
	// MasterName is set, else two or more Cluster seed nodes.
	Addrs []string
	// MasterName is the Sentinel master set name (REDIS_MASTER_NAME).
	MasterName string
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
		opt, err := redis.ParseURL(o.URL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", withoutURL(err))
		}
		opt.ContextTimeoutEnabled = true
		return redis.NewClient(opt), nil
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
			ContextTimeoutEnabled: true,
		}), nil
	}
	return redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                 o.Addrs,
		ContextTimeoutEnabled: true,
	}), nil
}

// withoutURL drops the URL that url.Parse puts in its errors, since a
// REDIS_URL may carry a password.
func withoutURL(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}
