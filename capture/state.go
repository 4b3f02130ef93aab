package capture

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// captureState is schedsync.capture_state, which both readers keep.
type captureState struct {
	// position: every spooled transaction up to it is committed and
	// visible to a snapshot that sees the row (see sql/capture_state.sql).
	position uint64
	// lsn is the commit LSN of the last transaction at or before position
	// (logical mode).
	lsn uint64
	// epoch is the capture history install drew.
	epoch uint64
}

// recoverState starts either reader's crash recovery: it makes durable
// what the sink holds (a poll or a stream that failed after appending part
// of a batch left those transactions there, not yet synced, so that
// recovery would not see them) and reads capture_state.
func recoverState(ctx context.Context, conn *pgx.Conn, sink Sink) (captureState, error) {
	if err := sink.Sync(ctx); err != nil {
		return captureState{}, fmt.Errorf("make spooled transactions durable: %w", err)
	}
	var pos, lsn, epoch int64
	err := conn.QueryRow(ctx, `SELECT position, lsn, epoch FROM schedsync.capture_state WHERE id = 1`).Scan(&pos, &lsn, &epoch)
	if err != nil {
		return captureState{}, fmt.Errorf("read schedsync.capture_state (run schedsync install on the master): %w", err)
	}
	if epoch == 0 {
		return captureState{}, fmt.Errorf("schedsync.capture_state has no capture epoch: it was installed by an older schedsync; run schedsync install on the master (and then schedsync resync on every slave)")
	}
	return captureState{position: uint64(pos), lsn: uint64(lsn), epoch: uint64(epoch)}, nil
}

// raisePosition brings capture_state up to last, the last position the
// spool holds, once recovery has made sure that every spooled transaction
// is committed. After uninstall and install the state starts again at 0
// while the spool goes on: positions must never restart below what the
// spool holds, or a reader of the state would take old positions for new.
func raisePosition(ctx context.Context, conn *pgx.Conn, last, lsn uint64) error {
	_, err := conn.Exec(ctx, `UPDATE schedsync.capture_state SET position = $1, lsn = greatest(lsn, $2), updated_at = now()
		WHERE id = 1 AND position < $1`, int64(last), int64(lsn))
	if err != nil {
		return fmt.Errorf("raise schedsync.capture_state to the spool's position %d: %w", last, err)
	}
	return nil
}
