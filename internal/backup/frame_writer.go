package backup

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// frameWriter writes frames to w in the order they are submitted, while
// data frames are compressed by a pool of workers. Memory stays flat: at
// most depth frames are in flight. The writer goroutine also feeds each
// table's checksums in file order, so hashing runs beside the COPY that
// produces the data instead of in its way.
type frameWriter struct {
	w        io.Writer
	enc      *zstd.Encoder
	queue    chan *outFrame // in file order
	jobs     chan *outFrame // data frames to compress
	done     chan struct{}  // the writer goroutine has returned
	errMu    sync.Mutex
	err      error // the first write error
	aborted  atomic.Bool
	written  atomic.Int64
	workers  sync.WaitGroup
	raws     sync.Pool
	progress Progress
}

// outFrame is one frame on its way to the file.
type outFrame struct {
	typ      byte
	raw      []byte    // data frames: the raw chunk; others: the payload
	comp     []byte    // data frames: the compressed chunk
	sum      *tableSum // data and end frames: the table's running checksums
	copyRows int64     // end frames: the row count COPY reported
	ready    chan struct{}
	barrier  chan struct{} // barrier frames (typ 0): closed once all before it are written
}

const frameBarrier byte = 0

func newFrameWriter(w io.Writer, workers int, level zstd.EncoderLevel, progress Progress) (*frameWriter, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(workers),
		zstd.WithEncoderCRC(false)) // every frame has a CRC32C already
	if err != nil {
		return nil, fmt.Errorf("create zstd encoder: %w", err)
	}
	depth := 2*workers + 2
	fw := &frameWriter{
		w: w, enc: enc, progress: orNoProgress(progress),
		queue: make(chan *outFrame, depth), jobs: make(chan *outFrame, depth+2), done: make(chan struct{}),
	}
	fw.raws.New = func() any { b := make([]byte, 0, chunkSize); return &b }
	for range workers {
		fw.workers.Go(fw.compress)
	}
	go fw.run()
	return fw, nil
}

func (fw *frameWriter) compress() {
	for f := range fw.jobs {
		f.comp = fw.enc.EncodeAll(f.raw, f.comp[:0])
		close(f.ready)
	}
}

// writeHeader writes the file header; call it before any frame.
func (fw *frameWriter) writeHeader() error {
	n, err := fw.w.Write(appendFileHeader(nil))
	fw.written.Add(int64(n))
	if err != nil {
		return fmt.Errorf("write backup: %w", err)
	}
	return nil
}

// submit queues a frame. It fails once writing has failed.
func (fw *frameWriter) submit(ctx context.Context, f *outFrame) error {
	select {
	case fw.queue <- f:
	case <-fw.done:
		return fw.failed()
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.typ == frameData {
		fw.jobs <- f // never blocks for long: workers drain it unconditionally
	}
	return nil
}

func (fw *frameWriter) submitJSON(ctx context.Context, typ byte, v any) error {
	p, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s frame: %w", frameName(typ), err)
	}
	return fw.submit(ctx, &outFrame{typ: typ, raw: p})
}

// wait returns once every frame submitted so far is written.
func (fw *frameWriter) wait(ctx context.Context) error {
	b := &outFrame{typ: frameBarrier, barrier: make(chan struct{})}
	if err := fw.submit(ctx, b); err != nil {
		return err
	}
	select {
	case <-b.barrier:
		return fw.failed()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (fw *frameWriter) failed() error {
	fw.errMu.Lock()
	defer fw.errMu.Unlock()
	return fw.err
}

// close writes what is queued and stops the goroutines.
func (fw *frameWriter) close() error {
	close(fw.queue)
	<-fw.done
	close(fw.jobs)
	fw.workers.Wait()
	fw.enc.Close()
	return fw.failed()
}

// abort drops what is queued and stops the goroutines.
func (fw *frameWriter) abort() {
	fw.aborted.Store(true)
	_ = fw.close()
}

func (fw *frameWriter) run() {
	defer close(fw.done)
	for f := range fw.queue {
		if f.ready != nil {
			<-f.ready
		}
		if f.barrier != nil {
			close(f.barrier)
			continue
		}
		if fw.failed() != nil || fw.aborted.Load() {
			continue // drain, so that submit never blocks
		}
		if err := fw.emit(f); err != nil {
			fw.errMu.Lock()
			fw.err = err
			fw.errMu.Unlock()
		}
	}
}

func (fw *frameWriter) emit(f *outFrame) error {
	switch f.typ {
	case frameData:
		rows := f.sum.rows()
		if err := f.sum.add(f.raw); err != nil {
			return fmt.Errorf("table %s: %w", f.sum.hdr.String(), err)
		}
		if err := fw.writeFrame(frameData, f.comp, len(f.raw)); err != nil {
			return err
		}
		fw.progress.Add(f.sum.rows()-rows, int64(len(f.raw)))
		raw := f.raw[:0]
		fw.raws.Put(&raw)
		return nil
	case frameEnd:
		end, err := f.sum.finish()
		if err != nil {
			return fmt.Errorf("table %s: %w", f.sum.hdr.String(), err)
		}
		if end.Rows != f.copyRows {
			return fmt.Errorf("table %s: COPY reported %d rows, its stream holds %d", f.sum.hdr.String(), f.copyRows, end.Rows)
		}
		f.sum.end = end
		p, err := json.Marshal(end)
		if err != nil {
			return err
		}
		return fw.writeFrame(frameEnd, p, len(p))
	}
	return fw.writeFrame(f.typ, f.raw, len(f.raw))
}

func (fw *frameWriter) writeFrame(typ byte, payload []byte, rawLen int) error {
	var h [frameHeaderSize]byte
	putFrameHeader(h[:], frameHeader{typ: typ, payloadLen: uint32(len(payload)), rawLen: uint32(rawLen),
		payloadCRC: crc32.Checksum(payload, castagnoli)})
	n, err := fw.w.Write(h[:])
	if err == nil {
		var m int
		m, err = fw.w.Write(payload)
		n += m
	}
	fw.written.Add(int64(n))
	if err != nil {
		return fmt.Errorf("write backup: %w", err)
	}
	return nil
}

// chunker is the io.Writer COPY TO writes a table into: it cuts the stream
// into chunks of chunkSize and submits them as data frames.
type chunker struct {
	ctx context.Context
	fw  *frameWriter
	sum *tableSum
	buf []byte
}

func (c *chunker) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if c.buf == nil {
			c.buf = *c.fw.raws.Get().(*[]byte)
		}
		k := min(len(p), chunkSize-len(c.buf))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		if len(c.buf) == chunkSize {
			if err := c.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (c *chunker) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	f := &outFrame{typ: frameData, raw: c.buf, sum: c.sum, ready: make(chan struct{})}
	c.buf = nil
	return c.fw.submit(c.ctx, f)
}
