package capture

import "context"

// Reader is a capture reader of either mode, as the master service drives
// it: Connect, then Serve until it fails or ctx ends; RequestSnapshot may
// be called from any goroutine.
type Reader interface {
	Connect(ctx context.Context) error
	Serve(ctx context.Context) error
	RequestSnapshot(fn SnapshotFunc) <-chan SnapshotResult
	// Epoch is the capture history the reader spools into, known once
	// connected (0 before).
	Epoch() uint64
	Close()
}
