package service

import (
	"io"
	"math/rand"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// faultProxy forwards TCP connections to a target on loopback and, while
// faults are on, cuts them after a random number of bytes (mid-frame),
// delays writes and stalls whole connections past the heartbeat deadline.
type faultProxy struct {
	ln     net.Listener
	target string
	faults atomic.Bool
	cuts   atomic.Int64
	stalls atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]bool
	rng   *rand.Rand
	// cutAfter is the mean bytes a connection carries before a cut.
	cutAfter int
	stall    time.Duration
}

func newFaultProxy(t *testing.T, target string, cutAfter int, stall time.Duration) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, conns: map[net.Conn]bool{}, rng: rand.New(rand.NewSource(1)), cutAfter: cutAfter, stall: stall}
	p.faults.Store(true)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *faultProxy) addr() string { return p.ln.Addr().String() }

func (p *faultProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

func (p *faultProxy) intn(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rng.Intn(n)
}

func (p *faultProxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
}

func (p *faultProxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.track(in, true)
		p.track(out, true)
		budget := &atomic.Int64{}
		budget.Store(int64(1 + p.intn(2*p.cutAfter)))
		stallHere := p.intn(8) == 0
		closeBoth := func() {
			in.Close()
			out.Close()
			p.track(in, false)
			p.track(out, false)
		}
		go p.pipe(in, out, budget, stallHere, closeBoth)
		go p.pipe(out, in, budget, false, closeBoth)
	}
}

// pipe copies src to dst in small chunks, spending the connection's byte
// budget; when it runs out (faults on) the connection is cut mid-stream.
func (p *faultProxy) pipe(src, dst net.Conn, budget *atomic.Int64, stall bool, closeBoth func()) {
	defer closeBoth()
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if n > 0 && p.faults.Load() {
			if left := budget.Add(-int64(n)); left < 0 {
				keep := max(0, n+int(left))
				dst.Write(buf[:keep]) // part of a frame, then the cut
				if stall && p.stall > 0 {
					// Go silent instead of closing: only heartbeats can tell.
					p.stalls.Add(1)
					time.Sleep(p.stall)
				}
				p.cuts.Add(1)
				return
			}
			if p.intn(50) == 0 {
				time.Sleep(time.Duration(p.intn(5)) * time.Millisecond)
			}
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			return
		}
	}
}
