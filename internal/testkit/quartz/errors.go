package quartz

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// errKind says what the workload does about an error.
type errKind int

const (
	// fatal errors are bugs or a wrong database (a missing table, a
	// standby): retrying would only hide them, so Run returns them.
	fatal errKind = iota
	// transient errors are the races a clustered scheduler lives with;
	// the transaction rolled back and can be run again at once.
	transient
	// connection errors come from a server that is down, restarting or
	// out of connections; they are retried with backoff until the server
	// is back or the context ends.
	connection
)

func (k errKind) String() string {
	switch k {
	case transient:
		return "transient"
	case connection:
		return "connection"
	default:
		return "fatal"
	}
}

// classify sorts an error from pgx into an errKind.
func classify(err error) errKind {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch code := pgErr.Code; {
		case code == "40001", // serialization_failure
			code == "40P01", // deadlock_detected
			code == "23505", // unique_violation: two instances adding the same row
			code == "55P03": // lock_not_available
			return transient
		case strings.HasPrefix(code, "08"), // connection_exception
			strings.HasPrefix(code, "53"), // insufficient_resources: too many connections, disk full
			code == "57P01",               // admin_shutdown: server stopping, backend terminated
			code == "57P02",               // crash_shutdown
			code == "57P03":               // cannot_connect_now: starting up, in recovery
			return connection
		default:
			return fatal
		}
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr),
		errors.As(err, &netErr),
		pgconn.SafeToRetry(err),
		errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.EPIPE):
		return connection
	}
	return fatal
}

// backoff is the wait between retries of one loop: short and jittered
// after a transient error, doubling up to a cap while the server is
// unreachable.
type backoff struct{ next time.Duration }

const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 2 * time.Second
)

func (b *backoff) reset() { b.next = 0 }

func (b *backoff) delay(kind errKind) time.Duration {
	if kind == transient {
		return time.Duration(1+rand.Int64N(20)) * time.Millisecond
	}
	if b.next == 0 {
		b.next = backoffMin
	}
	d := b.next + time.Duration(rand.Int64N(int64(b.next/2)))
	b.next = min(2*b.next, backoffMax)
	return d
}

// sleep waits d or until ctx ends, reporting whether the full wait elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
