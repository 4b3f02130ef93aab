package backup

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// frameSource reads a backup file's frames on a goroutine of its own and
// decompresses data frames on a pool of workers, ahead of the consumer,
// which receives them in file order. Like the writer, it holds at most a
// few frames in memory.
type frameSource struct {
	fr      *frameReader
	dec     *zstd.Decoder
	queue   chan *inFrame // in file order; an inFrame with err ends it
	jobs    chan *inFrame
	stop    chan struct{}
	done    chan struct{} // the reading goroutine has returned
	workers sync.WaitGroup
}

// frameBufs holds chunk-sized buffers for compressed and decompressed
// frames, shared by every frameSource: a file reuses them frame after
// frame, and so does the next file (verify then restore, or many small
// files) instead of zeroing megabytes anew.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize); return &b }}

// inFrame is one frame read from the file.
type inFrame struct {
	typ     byte
	off     int64  // where the frame starts in the file
	size    int64  // its size in the file, header included
	payload []byte // data frames: decompressed, once ready is closed
	comp    []byte
	rawLen  int
	ready   chan struct{}
	err     error
}

// newFrameSource checks the file header and starts reading.
func newFrameSource(r io.Reader) (*frameSource, error) {
	fr, err := newFrameReader(r)
	if err != nil {
		return nil, err
	}
	workers := runtime.GOMAXPROCS(0)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(workers),
		zstd.WithDecoderMaxMemory(maxRawChunk), zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		return nil, fmt.Errorf("create zstd decoder: %w", err)
	}
	depth := 2*workers + 2
	s := &frameSource{fr: fr, dec: dec, queue: make(chan *inFrame, depth), jobs: make(chan *inFrame, depth+2),
		stop: make(chan struct{}), done: make(chan struct{})}
	for range workers {
		s.workers.Go(s.decompress)
	}
	go s.read()
	return s, nil
}

// getBuf is an empty buffer of capacity n or more.
func getBuf(n int) []byte {
	b := *frameBufs.Get().(*[]byte)
	if cap(b) < n {
		return make([]byte, 0, n)
	}
	return b[:0]
}

// putBuf gives back a buffer of getBuf's once nothing refers to it.
func putBuf(b []byte) {
	if cap(b) >= chunkSize && cap(b) <= maxRawChunk {
		b = b[:0]
		frameBufs.Put(&b)
	}
}

func (s *frameSource) read() {
	defer close(s.done)
	defer close(s.jobs)
	for {
		h, p, off, err := s.fr.next()
		f := &inFrame{typ: h.typ, off: off, size: s.fr.off - off, err: err, rawLen: int(h.rawLen)}
		if err == nil && h.typ == frameFinal {
			f.err = s.fr.expectEOF()
			if f.err == nil {
				f.err = io.EOF
			}
		}
		if f.err == nil {
			if h.typ == frameData {
				f.comp = append(getBuf(len(p)), p...)
				f.ready = make(chan struct{})
			} else {
				f.payload = append([]byte(nil), p...)
			}
		}
		select {
		case s.queue <- f:
		case <-s.stop:
			return
		}
		if f.err != nil {
			return
		}
		if f.ready != nil {
			s.jobs <- f
		}
	}
}

func (s *frameSource) decompress() {
	for f := range s.jobs {
		out, err := s.dec.DecodeAll(f.comp, getBuf(f.rawLen))
		switch {
		case err != nil:
			f.err = corruptf(f.off, "data frame does not decompress: %v", err)
		case len(out) != f.rawLen:
			f.err = corruptf(f.off, "data frame decompresses to %d bytes, its header says %d", len(out), f.rawLen)
		}
		putBuf(f.comp)
		f.comp, f.payload = nil, out
		close(f.ready)
	}
}

// next returns the next frame. The end marker, once the file is checked
// to end there, is io.EOF.
func (s *frameSource) next(ctx context.Context) (*inFrame, error) {
	select {
	case f, ok := <-s.queue:
		if !ok {
			return nil, io.ErrClosedPipe
		}
		if f.ready != nil {
			<-f.ready
		}
		if f.err != nil {
			return f, f.err
		}
		return f, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// release gives a data frame's buffer back.
func (s *frameSource) release(f *inFrame) {
	if f.typ == frameData && f.payload != nil {
		putBuf(f.payload)
		f.payload = nil
	}
}

// close stops reading; it does not close the underlying reader.
func (s *frameSource) close() {
	close(s.stop)
	<-s.done
	s.workers.Wait()
	s.dec.Close()
}
