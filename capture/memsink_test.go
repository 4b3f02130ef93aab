package capture

import (
	"context"
	"io"
	"sync"

	"github.com/schedsync/schedsync/internal/change"
)

// memSink is the in-memory Sink the tests use until the spool exists; it
// keeps every appended transaction, or only counts them when discard is set.
type memSink struct {
	mu      sync.Mutex
	txns    []*change.Txn
	pos     []uint64
	next    uint64
	durable int // txns[:durable] are durable
	discard bool
	counted int64
}

func (m *memSink) Append(ctx context.Context, src change.TxnSource) (uint64, error) {
	if m.discard {
		var n int64
		for {
			_, err := src.Next()
			if err != nil {
				if err == io.EOF {
					break
				}
				return 0, err
			}
			n++
		}
		t := &change.Txn{TxnHeader: src.Header()}
		m.mu.Lock()
		defer m.mu.Unlock()
		m.counted += n
		return m.add(t), nil
	}
	t, err := change.ReadAll(src)
	if err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.add(t), nil
}

func (m *memSink) add(t *change.Txn) uint64 {
	m.next++
	m.txns = append(m.txns, t)
	m.pos = append(m.pos, m.next)
	return m.next
}

func (m *memSink) Sync(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.durable = len(m.txns)
	return nil
}

func (m *memSink) HeadersAfter(ctx context.Context, pos uint64, fn func(uint64, change.TxnHeader)) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var last uint64
	for i := 0; i < m.durable; i++ {
		if m.pos[i] > pos {
			fn(m.pos[i], m.txns[i].TxnHeader)
		}
		last = m.pos[i]
	}
	return last, nil
}

func (m *memSink) LastPosition() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.next
}

func (m *memSink) all() []*change.Txn {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*change.Txn(nil), m.txns...)
}
