package capture

import (
	"context"

	"github.com/schedsync/schedsync/internal/change"
)

// Sink receives captured transactions. The spool implements it.
type Sink interface {
	// Append adds one transaction, draining src, and returns its position.
	// If src fails, nothing of the transaction may remain.
	Append(ctx context.Context, src change.TxnSource) (uint64, error)
	// Sync returns once everything appended is durable.
	Sync(ctx context.Context) error
	// HeadersAfter calls fn with the position and header of every durable
	// transaction after position pos, in order, and returns the last
	// durable position. Crash recovery uses it to find what was spooled
	// but not yet confirmed in the master repository.
	HeadersAfter(ctx context.Context, pos uint64, fn func(pos uint64, h change.TxnHeader)) (last uint64, err error)
	// LastPosition is the position of the last transaction appended.
	LastPosition() uint64
}
