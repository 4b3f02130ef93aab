package ship

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func connPair(t *testing.T, a, b ConnOptions) (*Conn, *Conn) {
	t.Helper()
	x, y := tcpPair(t)
	return NewConn(x, a), NewConn(y, b)
}

func TestConnExchange(t *testing.T) {
	opts := ConnOptions{Heartbeat: time.Second}
	master, slave := connPair(t, opts, opts)
	ctx := context.Background()
	go func() {
		for _, m := range sampleMessages()[:8] { // all but the refusals
			if err := master.Send(ctx, m); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for _, want := range sampleMessages()[:8] {
		got, err := slave.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !sameMessage(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}
}

// A heartbeat goroutine and a data goroutine share one Conn: every frame
// must arrive whole, large ones included.
func TestConnConcurrentSend(t *testing.T) {
	opts := ConnOptions{Heartbeat: 5 * time.Second, MaxFrame: 2 << 20, PeerMaxFrame: 2 << 20}
	master, slave := connPair(t, opts, opts)
	ctx := context.Background()
	const senders, each = 4, 40
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				pos := uint64(s*each + i)
				// Some frames span several write chunks.
				data := bytes.Repeat(binary.BigEndian.AppendUint64(nil, pos), 1+int(pos%7)*6000)
				if err := master.Send(ctx, Records{First: pos, Last: pos, Data: data}); err != nil {
					t.Error(err)
					return
				}
				if err := master.Send(ctx, Heartbeat{Position: pos}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	seen := map[uint64]bool{}
	for range 2 * senders * each {
		m, err := slave.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rec, ok := m.(Records)
		if !ok {
			continue
		}
		want := bytes.Repeat(binary.BigEndian.AppendUint64(nil, rec.First), 1+int(rec.First%7)*6000)
		if !bytes.Equal(rec.Data, want) {
			t.Fatalf("records %d arrived mangled", rec.First)
		}
		seen[rec.First] = true
	}
	wg.Wait()
	if len(seen) != senders*each {
		t.Fatalf("got %d distinct batches, want %d", len(seen), senders*each)
	}
}

func TestConnDeadPeer(t *testing.T) {
	_, slave := connPair(t, ConnOptions{}, ConnOptions{Heartbeat: 20 * time.Millisecond, Peer: "master node01"})
	_, err := slave.Receive(context.Background())
	if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "master node01") ||
		!strings.Contains(err.Error(), "considered dead") {
		t.Fatalf("got %v", err)
	}
	if _, again := slave.Receive(context.Background()); again != err {
		t.Fatalf("the error is not sticky: %v", again)
	}
}

func TestConnHeartbeatsKeepAlive(t *testing.T) {
	master, slave := connPair(t, ConnOptions{Heartbeat: 10 * time.Millisecond}, ConnOptions{Heartbeat: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	n := uint64(0)
	go func() {
		done <- master.SendHeartbeats(ctx, func() Heartbeat { n++; return Heartbeat{Position: n} })
	}()
	for i := range 5 {
		m, err := slave.Receive(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		hb, ok := m.(Heartbeat)
		if !ok || hb.Position != uint64(i+1) || hb.Time.IsZero() {
			t.Fatalf("got %+v", m)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("SendHeartbeats after cancel: %v", err)
	}
}

func TestConnFrameLimits(t *testing.T) {
	master, slave := connPair(t,
		ConnOptions{Heartbeat: time.Second, PeerMaxFrame: minMaxFrame},
		ConnOptions{Heartbeat: time.Second, MaxFrame: minMaxFrame})
	ctx := context.Background()
	big := Records{First: 1, Last: 1, Data: make([]byte, minMaxFrame)}
	if err := master.Send(ctx, big); err == nil || !strings.Contains(err.Error(), "frame limit") {
		t.Fatalf("oversized send: %v", err)
	}
	// Refused before writing: the connection is still good.
	if err := master.Send(ctx, Ack{Received: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := slave.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	// A peer that ignores our limit is a protocol error on our side.
	liar := NewConn(master.nc, ConnOptions{Heartbeat: time.Second, PeerMaxFrame: MaxFrameLimit})
	go liar.Send(ctx, big)
	if _, err := slave.Receive(ctx); !errors.Is(err, ErrProtocol) {
		t.Fatalf("oversized receive: %v", err)
	}
}

func TestConnRefusalWhileStreaming(t *testing.T) {
	master, slave := connPair(t, ConnOptions{Heartbeat: time.Second}, ConnOptions{Heartbeat: time.Second})
	ctx := context.Background()
	refusal := RefuseBacklog("node02", 5000, 4096)
	if err := master.Send(ctx, refusal); err != nil {
		t.Fatal(err)
	}
	_, err := slave.Receive(ctx)
	if !errors.Is(err, ErrNeedsResync) || err.Error() != refusal.Message {
		t.Fatalf("got %v", err)
	}
}

func TestConnCancelAndClose(t *testing.T) {
	master, slave := connPair(t, ConnOptions{Heartbeat: time.Minute}, ConnOptions{Heartbeat: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	if _, err := slave.Receive(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled receive: %v", err)
	}
	// The cancellation closed the slave's end; the master sees the end.
	if _, err := master.Receive(context.Background()); !errors.Is(err, io.EOF) {
		t.Fatalf("receive after the peer closed: %v", err)
	}
}
