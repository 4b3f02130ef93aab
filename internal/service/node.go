package service

import (
	"context"
	"time"

	"github.com/schedsync/schedsync/internal/metrics"
)

// Node is a running sync service: a master or a slave.
type Node interface {
	// Run runs the service until ctx is cancelled. It calls ready once the
	// node is serving (master: listening on sync.listen; slave: streaming from
	// its master), or returns the error it failed on before that. It returns
	// nil on a clean shutdown. Errors that must map to an exit code wrap
	// a sentinel: ship.ErrNeedsResync (exit 3); other errors exit 1.
	Run(ctx context.Context, ready func()) error
	// Status reports the current state; safe for concurrent use.
	Status() Status
}

// Commander is optionally implemented by a Node to answer control socket
// commands other than "status": a slave answers "verify", a master
// "snapshot" (for `schedsync backup`). The reply is marshalled to one JSON
// line; an error is sent to the client as its message, so it must not
// contain a secret.
type Commander interface {
	Command(ctx context.Context, name string, args []string) (any, error)
}

// NodeOptions are the settings of one run that come from the command line
// rather than from the config file; a node is built with them.
type NodeOptions struct {
	// Wait is how long Run may keep retrying what keeps it from being
	// ready (a slave: reaching its master) before it gives up and returns
	// that error. Zero means no retry: fail at the first attempt. It comes
	// from `start --wait` (default 1m). It does not bound work that is not
	// a retry, such as recovering the spool.
	Wait time.Duration
	// ConfigPath is the service's config file, for commands it runs on
	// itself (resync.auto runs `schedsync --config ConfigPath resync`).
	ConfigPath string
	// Metrics counts what the node does; nil counts nothing.
	Metrics *metrics.Metrics
}
