package ship

import (
	"encoding/binary"
	"io"
	"slices"
	"strconv"
)

// magic opens each direction of a connection, before the first frame. Its
// first byte is not 0x16, the first byte of a TLS handshake record, so the
// master tells a plaintext slave from a TLS one by one byte. And "SSYN" is
// no TLS record header, so a TLS slave reading a plaintext master's reply
// fails at once ("first record does not look like a TLS handshake") instead
// of waiting for more bytes.
const magic = "SSYN"

// tlsHandshakeRecord is the first byte of every TLS ClientHello.
const tlsHandshakeRecord = 0x16

// frameType is the type byte of a frame. The values are the wire format.
type frameType uint8

const (
	typeHello        frameType = 1 // slave → master, first frame
	typeChallenge    frameType = 2 // master → slave
	typeProof        frameType = 3 // slave → master
	typeWelcome      frameType = 4 // master → slave, handshake done
	typeError        frameType = 5 // either way, any time; frozen format
	typeRecords      frameType = 16
	typeHeartbeat    frameType = 17
	typeAck          frameType = 18
	typeMasterStatus frameType = 19
	typeRequest      frameType = 20 // slave → master
	typeReply        frameType = 21 // master → slave
	typeStream       frameType = 22 // master → slave
)

var typeNames = map[frameType]string{
	typeHello: "Hello", typeChallenge: "Challenge", typeProof: "Proof",
	typeWelcome: "Welcome", typeError: "Error", typeRecords: "Records",
	typeHeartbeat: "Heartbeat", typeAck: "Ack", typeMasterStatus: "MasterStatus",
	typeRequest: "Request", typeReply: "Reply", typeStream: "Stream",
}

func (t frameType) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return "frame type " + strconv.Itoa(int(t))
}

// Frame size limits, in payload bytes.
const (
	// DefaultMaxFrame is the largest frame a side accepts unless configured
	// otherwise. Each side announces its own limit in the handshake.
	DefaultMaxFrame = 8 << 20
	// MaxFrameLimit is the most a side may configure: a frame is held in
	// memory whole, once per connection.
	MaxFrameLimit = 64 << 20
	// minMaxFrame keeps a configured limit large enough for any control
	// message and for useful Records batches.
	minMaxFrame = 64 << 10
	// handshakeMaxFrame bounds frames before authentication: an
	// unauthenticated peer gets to make us allocate no more than this.
	handshakeMaxFrame = 16 << 10
)

const (
	frameHeaderSize = 5
	// readChunk is how much payload is allocated ahead of the bytes that
	// actually arrived, so a peer that declares a large frame and sends
	// nothing costs us little.
	readChunk = 64 << 10
	// writeChunk is the unit of a large write, so that a write deadline
	// measures progress rather than the time to send a whole frame.
	writeChunk = 256 << 10
)

// clampMaxFrame turns a configured limit into one in [minMaxFrame,
// MaxFrameLimit]; 0 means DefaultMaxFrame.
func clampMaxFrame(n int) int {
	switch {
	case n == 0:
		return DefaultMaxFrame
	case n < minMaxFrame:
		return minMaxFrame
	case n > MaxFrameLimit:
		return MaxFrameLimit
	}
	return n
}

type frame struct {
	typ     frameType
	payload []byte
}

// readFrame reads one frame of at most max payload bytes. It returns io.EOF
// only when the stream ends cleanly between two frames. The declared length
// is checked against max before any allocation, and the payload buffer
// grows with the bytes received, never with the bytes promised.
func readFrame(r io.Reader, max int) (frame, error) { return readFrameInto(r, max, 0, nil) }

// readFrameInto is readFrame with the payload of a frame of type into
// read into scratch when it fits there; other frames get their own.
func readFrameInto(r io.Reader, max int, into frameType, scratch []byte) (frame, error) {
	var hdr [frameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return frame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	t := frameType(hdr[4])
	if uint64(n) > uint64(max) {
		return frame{}, protocolf("%s frame of %d bytes is larger than the limit of %d bytes", t, n, max)
	}
	var payload []byte
	var err error
	if t == into && int(n) <= cap(scratch) {
		payload = scratch[:n]
		_, err = io.ReadFull(r, payload)
	} else {
		payload, err = readPayload(r, int(n))
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return frame{}, err
	}
	return frame{typ: t, payload: payload}, nil
}

func readPayload(r io.Reader, n int) ([]byte, error) {
	if n <= readChunk {
		buf := make([]byte, n)
		_, err := io.ReadFull(r, buf)
		return buf, err
	}
	buf := make([]byte, 0, readChunk)
	for len(buf) < n {
		if len(buf) == cap(buf) {
			// Double, but never past n: memory stays within twice what
			// the peer actually sent.
			buf = slices.Grow(buf, min(n-len(buf), cap(buf)))
		}
		end := min(n, cap(buf))
		m, err := io.ReadFull(r, buf[len(buf):end])
		buf = buf[:len(buf)+m]
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// maxScratch bounds the buffer a connection keeps between frames.
const maxScratch = readChunk + 4096

// appendFrameHeader appends the header of a frame with n payload bytes.
func appendFrameHeader(b []byte, t frameType, n int) []byte {
	b = appendU32(b, uint32(n))
	return append(b, byte(t))
}

// writeFrame writes one frame whose payload is head followed by tail. tail
// (a Records batch) is written from the caller's slice, not copied, in
// chunks of writeChunk.
func writeFrame(w io.Writer, t frameType, head, tail []byte) error {
	return writeFrameBuf(w, t, head, tail, nil)
}

// writeFrameBuf is writeFrame building the frame's front in *scratch,
// which it keeps for the next frame: a connection reuses one buffer
// rather than allocating one per frame.
func writeFrameBuf(w io.Writer, t frameType, head, tail []byte, scratch *[]byte) error {
	n := len(head) + len(tail)
	small := len(tail) <= readChunk
	size := frameHeaderSize + len(head)
	if small {
		size = frameHeaderSize + n
	}
	var buf []byte
	if scratch != nil && cap(*scratch) >= size {
		buf = (*scratch)[:0]
	} else {
		buf = make([]byte, 0, size)
		if scratch != nil && size <= maxScratch {
			*scratch = buf
		}
	}
	buf = appendFrameHeader(buf, t, n)
	buf = append(buf, head...)
	if small {
		buf = append(buf, tail...)
		tail = nil
	}
	if _, err := w.Write(buf); err != nil {
		return err
	}
	for len(tail) > 0 {
		k := min(len(tail), writeChunk)
		if _, err := w.Write(tail[:k]); err != nil {
			return err
		}
		tail = tail[k:]
	}
	return nil
}
