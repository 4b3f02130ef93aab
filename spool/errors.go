package spool

import (
	"errors"
	"fmt"
)

var (
	// ErrCorrupt is wrapped by every error that reports bad bytes in a
	// segment file (as a *CorruptError). The spool stops there: bad data is
	// never skipped and never repaired by guessing.
	ErrCorrupt = errors.New("corrupt spool")
	// ErrNotRetained means the transactions a reader asked for were already
	// deleted by TruncateBefore.
	ErrNotRetained = errors.New("position no longer retained in the spool")
	// ErrOutOfOrder means a transaction or record was offered at a position
	// that does not strictly follow the last one in the spool.
	ErrOutOfOrder = errors.New("position does not follow the spool's last position")
	// ErrClosed is returned by calls on a closed spool or reader.
	ErrClosed = errors.New("spool closed")
)

// CorruptError names the segment file and the byte offset where bad data was
// found. It wraps ErrCorrupt, and the cause when there is one (for example a
// change.ErrCorrupt from a change that does not decode).
type CorruptError struct {
	File   string // path of the segment file
	Offset int64  // byte offset in the file of the bad header or record
	Reason string
	Err    error // underlying cause, may be nil
}

func (e *CorruptError) Error() string {
	msg := fmt.Sprintf("corrupt spool segment %s at byte %d: %s", e.File, e.Offset, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap lets errors.Is find ErrCorrupt and the cause.
func (e *CorruptError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrCorrupt}
	}
	return []error{ErrCorrupt, e.Err}
}

func corruptf(file string, off int64, format string, args ...any) *CorruptError {
	return &CorruptError{File: file, Offset: off, Reason: fmt.Sprintf(format, args...)}
}
