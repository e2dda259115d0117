package dedupe

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// Kinds of store error, as metric labels (ErrorKind).
const (
	// KindOOM: Redis is full and refuses writes (maxmemory reached with
	// noeviction). Nothing is lost, but no new fact is published until memory
	// is freed or maxmemory raised.
	KindOOM = "oom"
	// KindFailover: Redis answered that it cannot serve writes right now:
	// LOADING, READONLY, MASTERDOWN, CLUSTERDOWN, TRYAGAIN, or too many clients.
	KindFailover = "failover"
	// KindTimeout: no answer in time (the call's deadline, a socket timeout or
	// no free connection in the pool).
	KindTimeout = "timeout"
	// KindConn: the connection could not be made or broke.
	KindConn = "conn"
	// KindOther: anything else, e.g. a key holding a value this package did
	// not write (ErrUnexpectedValue).
	KindOther = "other"
)

// Kinds lists every kind ErrorKind returns, so that a metric can start each
// series at zero.
var Kinds = []string{KindOOM, KindFailover, KindTimeout, KindConn, KindOther}

// ErrorKind classifies an error returned by Claim, Commit or Release; "" for
// nil. It uses go-redis's typed checks; Redis's OOM reply is an error reply
// whose text starts with "OOM", which is what redis.IsOOMError looks for.
func ErrorKind(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return ""
	case redis.IsOOMError(err):
		return KindOOM
	case unavailableReply(err):
		return KindFailover
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, redis.ErrPoolTimeout),
		errors.As(err, &ne) && ne.Timeout():
		return KindTimeout
	case errors.As(err, new(*net.OpError)), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, redis.ErrClosed):
		return KindConn
	}
	return KindOther
}
