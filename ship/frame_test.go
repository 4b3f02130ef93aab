package ship

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
)

func TestFrameRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, readChunk, readChunk + 1, 3*writeChunk + 7} {
		head := []byte{1, 2, 3}
		tail := bytes.Repeat([]byte{0xab}, size)
		var buf bytes.Buffer
		if err := writeFrame(&buf, typeRecords, head, tail); err != nil {
			t.Fatal(err)
		}
		if got, want := buf.Len(), frameHeaderSize+len(head)+size; got != want {
			t.Fatalf("size %d: wrote %d bytes, want %d", size, got, want)
		}
		f, err := readFrame(&buf, MaxFrameLimit)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if f.typ != typeRecords || !bytes.Equal(f.payload, append(head, tail...)) {
			t.Fatalf("size %d: frame does not round-trip", size)
		}
		if _, err := readFrame(&buf, MaxFrameLimit); err != io.EOF {
			t.Fatalf("after the last frame: got %v, want io.EOF", err)
		}
	}
}

func TestReadFrameTruncated(t *testing.T) {
	var buf bytes.Buffer
	writeFrame(&buf, typeAck, make([]byte, 16), nil)
	whole := buf.Bytes()
	for n := 0; n < len(whole); n++ {
		_, err := readFrame(bytes.NewReader(whole[:n]), 1<<10)
		want := io.ErrUnexpectedEOF
		if n == 0 {
			want = io.EOF // a clean end between frames
		}
		if err != want {
			t.Errorf("%d of %d bytes: got %v, want %v", n, len(whole), err, want)
		}
	}
}

func TestReadFrameTooLarge(t *testing.T) {
	hdr := appendFrameHeader(nil, typeRecords, 1<<20+1)
	_, err := readFrame(bytes.NewReader(hdr), 1<<20)
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("got %v, want a protocol error", err)
	}
	// The largest declarable length, as hostile input might send.
	hdr = []byte{0xff, 0xff, 0xff, 0xff, byte(typeRecords)}
	if _, err := readFrame(bytes.NewReader(hdr), MaxFrameLimit); !errors.Is(err, ErrProtocol) {
		t.Fatalf("got %v, want a protocol error", err)
	}
}

// A peer may declare the largest allowed frame and send a few bytes: we
// must not allocate what it declared.
func TestReadFrameAllocatesWhatArrives(t *testing.T) {
	input := append(appendFrameHeader(nil, typeRecords, MaxFrameLimit), make([]byte, 100)...)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := readFrame(bytes.NewReader(input), MaxFrameLimit)
	runtime.ReadMemStats(&after)
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
	// Other goroutines allocate too; the bound is loose but far below
	// the 64 MiB that was declared.
	if got := after.TotalAlloc - before.TotalAlloc; got > 4<<20 {
		t.Fatalf("allocated %d bytes for a frame of which 100 bytes arrived", got)
	}
}

func TestClampMaxFrame(t *testing.T) {
	for in, want := range map[int]int{0: DefaultMaxFrame, 1: minMaxFrame, 1 << 20: 1 << 20, 1 << 30: MaxFrameLimit} {
		if got := clampMaxFrame(in); got != want {
			t.Errorf("clampMaxFrame(%d) = %d, want %d", in, got, want)
		}
	}
}

// FuzzReadFrame feeds hostile bytes to the frame reader: it must never
// panic, never return more than the limit, and what it returns must be
// exactly what it consumed.
func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	writeFrame(&buf, typeHeartbeat, make([]byte, 24), nil)
	f.Add(buf.Bytes())
	buf.Reset()
	// Large seeds stall the fuzzing engine; frames past readChunk are
	// covered by TestFrameRoundTrip and TestReadFrameAllocatesWhatArrives.
	writeFrame(&buf, typeRecords, []byte{0, 0, 0, 0, 0, 0, 0, 1}, bytes.Repeat([]byte{7}, 300))
	f.Add(buf.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 16})
	f.Add([]byte{0, 1, 0, 1, 16, 1, 2})
	f.Add([]byte("SSYN"))
	f.Add([]byte{})
	const limit = 1 << 17
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var src io.Reader = r
		if len(data)%2 == 1 {
			src = iotest.OneByteReader(r) // short reads, as from a socket
		}
		fr, err := readFrame(src, limit)
		if err != nil {
			if fr.payload != nil {
				t.Fatal("payload returned with an error")
			}
			return
		}
		if len(fr.payload) > limit {
			t.Fatalf("payload of %d bytes over the limit", len(fr.payload))
		}
		consumed := data[:len(data)-r.Len()]
		var again bytes.Buffer
		writeFrame(&again, fr.typ, fr.payload, nil)
		if !bytes.Equal(again.Bytes(), consumed) {
			t.Fatal("frame does not re-encode to the bytes it was read from")
		}
	})
}
