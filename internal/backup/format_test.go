package backup

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

var update = flag.Bool("update", false, "rewrite testdata/golden.ssbak")

// synthTable is a table whose raw COPY stream a test makes up.
type synthTable struct {
	hdr  TableHeader
	data []byte
	rows int64
}

// binaryStream makes a COPY BINARY stream of rows rows of (int4, text),
// with a NULL every 7th text and some long values, so rows straddle chunks.
func binaryStream(rows int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := append([]byte(nil), binarySignature...)
	b = binary.BigEndian.AppendUint32(b, 0) // flags
	b = binary.BigEndian.AppendUint32(b, 0) // no header extension
	for i := range rows {
		b = binary.BigEndian.AppendUint16(b, 2)
		b = binary.BigEndian.AppendUint32(b, 4)
		b = binary.BigEndian.AppendUint32(b, uint32(i))
		if i%7 == 3 {
			b = binary.BigEndian.AppendUint32(b, 0xffffffff)
			continue
		}
		n := 10 + rng.IntN(60)
		if i%1000 == 0 {
			n = 100_000
		}
		b = binary.BigEndian.AppendUint32(b, uint32(n))
		for range n {
			b = append(b, byte('a'+rng.IntN(4)))
		}
	}
	return binary.BigEndian.AppendUint16(b, 0xffff)
}

func textStream(rows int) []byte {
	var b bytes.Buffer
	for i := range rows {
		fmt.Fprintf(&b, "%d\t{happy,\"sad face\"}\t\\N\n", i)
	}
	return b.Bytes()
}

func synthTables() []synthTable {
	return []synthTable{
		{hdr: TableHeader{Schema: "public", Name: "jobs", Format: formatBinary,
			Columns: []Column{{"id", "integer"}, {"name", "text"}}}, data: binaryStream(30_000, 1), rows: 30_000},
		{hdr: TableHeader{Schema: "public", Name: "empty", Format: formatBinary,
			Columns: []Column{{"id", "bigint"}}}, data: binaryStream(0, 2), rows: 0},
		{hdr: TableHeader{Schema: "sched", Name: "moods", Format: formatText,
			Columns: []Column{{"id", "integer"}, {"moods", "public.mood[]"}, {"note", "text"}}}, data: textStream(500), rows: 500},
	}
}

var fixedTime = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// buildFile writes a backup of synthetic tables, feeding COPY data in
// pieces of random sizes, as the server's messages would come.
func buildFile(t testing.TB, tables []synthTable) ([]byte, Manifest) {
	t.Helper()
	var buf bytes.Buffer
	fw, err := newFrameWriter(&buf, 2, zstd.SpeedFastest, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := Manifest{FormatVersion: FormatVersion, CaptureMode: "trigger", Position: 4242, SnapshotTime: fixedTime, Finished: fixedTime,
		Source:    Source{SystemIdentifier: 7461234567890123456, Database: "scheduler", ServerVersion: 150010, Encoding: "UTF8"},
		Sequences: []Sequence{{Schema: "public", Name: "jobs_id_seq", LastValue: 30_000, IsCalled: true}}}
	streams := map[string]synthTable{}
	var headers []TableHeader
	for _, st := range tables {
		streams[st.hdr.Name] = st
		headers = append(headers, st.hdr)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	copyFn := func(_ context.Context, h *TableHeader, w io.Writer) (int64, error) {
		st := streams[h.Name]
		for p := st.data; len(p) > 0; {
			n := min(len(p), 1+rng.IntN(300))
			if _, err := w.Write(p[:n]); err != nil {
				return 0, err
			}
			p = p[n:]
		}
		return st.rows, nil
	}
	if err := writeFrames(context.Background(), fw, &m, headers, copyFn); err != nil {
		t.Fatal(err)
	}
	if err := fw.close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), m
}

func TestRoundTrip(t *testing.T) {
	data, want := buildFile(t, synthTables())
	got, err := Verify(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if got.Rows != 30_500 || len(got.Tables) != 3 || got.Position != 4242 || got.Tables[0].Rows != 30_000 {
		t.Errorf("manifest: %+v", got)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("manifest read back differs:\n got %+v\nwant %+v", got, want)
	}
	t.Logf("%d raw bytes in a %d-byte file", got.RawBytes, len(data))
}

// goldenFile is a small backup kept in testdata: version 1 files must stay
// readable.
func goldenFile(t *testing.T) []byte {
	t.Helper()
	path := filepath.Join("testdata", "golden.ssbak")
	if *update {
		tables := synthTables()
		tables[0].data, tables[0].rows = binaryStream(50, 1), 50
		data, _ := buildFile(t, tables)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run Golden -update to create it)", err)
	}
	return data
}

func TestGoldenFileReads(t *testing.T) {
	m, err := Verify(context.Background(), bytes.NewReader(goldenFile(t)))
	if err != nil {
		t.Fatal(err)
	}
	if m.Position != 4242 || m.Rows != 550 || m.Source.SystemIdentifier != 7461234567890123456 || len(m.Sequences) != 1 {
		t.Errorf("golden manifest: %+v", m)
	}
}

// frameOffsets lists where each frame starts, by walking the headers.
func frameOffsets(data []byte) []int {
	var offs []int
	for off := fileHeaderSize; off+frameHeaderSize <= len(data); {
		offs = append(offs, off)
		off += frameHeaderSize + int(binary.BigEndian.Uint32(data[off+2:]))
	}
	return offs
}

func TestCorruptFiles(t *testing.T) {
	good := goldenFile(t)
	offs := frameOffsets(good)
	mid := offs[len(offs)/2]
	withVersion := func(v uint32) []byte {
		b := bytes.Clone(good)
		binary.BigEndian.PutUint32(b[8:], v)
		binary.BigEndian.PutUint32(b[12:], crc32.Checksum(b[:12], castagnoli))
		return b
	}
	flip := func(at int) []byte {
		b := bytes.Clone(good)
		b[at] ^= 0x40
		return b
	}
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "at byte 0: the file is empty"},
		{"wrong magic", append([]byte("PGDMP\x01\x0e\x00"), good[8:]...), "not a schedsync backup file"},
		{"wrong version", withVersion(2), "at byte 8: format version 2 is not supported (this schedsync reads version 1)"},
		{"damaged header", flip(9), "at byte 8: file header checksum mismatch"},
		{"flipped payload byte", flip(mid + frameHeaderSize + 3), fmt.Sprintf("at byte %d: checksum mismatch in the payload", mid)},
		{"flipped frame header", flip(mid + 4), fmt.Sprintf("at byte %d: frame header checksum mismatch", mid)},
		{"truncated in a frame", good[:mid+frameHeaderSize+2], fmt.Sprintf("at byte %d: file truncated in the frame at byte %d", mid+frameHeaderSize+2, mid)},
		{"truncated in a header", good[:mid+5], fmt.Sprintf("at byte %d: file truncated in the header of the frame at byte %d", mid+5, mid)},
		{"truncated at a frame", good[:mid], fmt.Sprintf("at byte %d: file truncated: it ends before its end marker", mid)},
		{"no end marker", good[:len(good)-frameHeaderSize], "file truncated: it ends before its end marker"},
		{"trailing data", append(bytes.Clone(good), 0), fmt.Sprintf("at byte %d: data after the end marker", len(good))},
		{"short header", good[:10], "at byte 10: file truncated: 10 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(context.Background(), bytes.NewReader(tc.data))
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v; want ErrCorrupt with %q", err, tc.want)
			}
		})
	}
}

// TestEveryTruncationFails cuts the file at every length and flips a bit
// at a sample of offsets: always a clean ErrCorrupt, never a panic.
func TestEveryTruncationFails(t *testing.T) {
	good := goldenFile(t)
	for n := range len(good) {
		if _, err := Verify(context.Background(), bytes.NewReader(good[:n])); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}
	for at := 0; at < len(good); at += 1 + at/50 {
		b := bytes.Clone(good)
		b[at] ^= 1
		if _, err := Verify(context.Background(), bytes.NewReader(b)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("bit flipped at %d: %v", at, err)
		}
	}
}

// TestStructureErrors builds files whose checksums are right but whose
// content is not: the SHA-256, the rows and the COPY structure catch them.
func TestStructureErrors(t *testing.T) {
	tables := synthTables()
	tables[0].data = tables[0].data[:len(tables[0].data)-2] // no trailer
	var buf bytes.Buffer
	fw, _ := newFrameWriter(&buf, 1, zstd.SpeedFastest, nil)
	m := Manifest{FormatVersion: FormatVersion}
	err := writeFrames(context.Background(), fw, &m, []TableHeader{tables[0].hdr}, func(_ context.Context, _ *TableHeader, w io.Writer) (int64, error) {
		_, err := w.Write(tables[0].data)
		return tables[0].rows, err
	})
	if err == nil {
		err = fw.close()
	} else {
		fw.abort()
	}
	if err == nil || !strings.Contains(err.Error(), "COPY stream ends without its trailer") {
		t.Errorf("writing a stream without trailer: %v", err)
	}

	// A wrong row count from COPY is refused when writing.
	buf.Reset()
	fw, _ = newFrameWriter(&buf, 1, zstd.SpeedFastest, nil)
	m = Manifest{FormatVersion: FormatVersion}
	err = writeFrames(context.Background(), fw, &m, []TableHeader{tables[2].hdr}, func(_ context.Context, _ *TableHeader, w io.Writer) (int64, error) {
		_, err := w.Write(tables[2].data)
		return 7, err
	})
	if err == nil {
		err = fw.close()
	} else {
		fw.abort()
	}
	if err == nil || !strings.Contains(err.Error(), "COPY reported 7 rows, its stream holds 500") {
		t.Errorf("writing with a wrong count: %v", err)
	}
}

func TestBinaryCounterSplits(t *testing.T) {
	stream := binaryStream(2000, 3)
	for _, piece := range []int{1, 2, 3, 5, 19, 64, 4096} {
		c := newRowCounter(formatBinary, 2)
		for p := stream; len(p) > 0; {
			n := min(piece, len(p))
			if err := c.write(p[:n]); err != nil {
				t.Fatalf("piece %d: %v", piece, err)
			}
			p = p[n:]
		}
		if rows, err := c.finish(); err != nil || rows != 2000 {
			t.Errorf("piece %d: %d rows, %v", piece, rows, err)
		}
	}
	c := newRowCounter(formatBinary, 3)
	if err := c.write(stream); err == nil || !strings.Contains(err.Error(), "has 2 fields, the table 3 columns") {
		t.Errorf("wrong column count: %v", err)
	}
}

func TestTextCounter(t *testing.T) {
	c := newRowCounter(formatText, 3)
	_ = c.write(textStream(10))
	if rows, err := c.finish(); rows != 10 || err != nil {
		t.Errorf("%d rows, %v", rows, err)
	}
	c = newRowCounter(formatText, 3)
	_ = c.write([]byte("1\ta\t"))
	if _, err := c.finish(); err == nil {
		t.Error("a row without its newline was accepted")
	}
}

// FuzzVerify feeds arbitrary bytes to the whole reader: it must never
// panic or hang, and anything it accepts must be self-consistent.
func FuzzVerify(f *testing.F) {
	data, _ := buildFile(f, []synthTable{synthTables()[2]})
	f.Add(data)
	f.Add(data[:len(data)/2])
	f.Add(appendFileHeader(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Verify(context.Background(), bytes.NewReader(b))
		if err == nil && m.FormatVersion != FormatVersion {
			t.Fatalf("accepted a manifest of version %d", m.FormatVersion)
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error that is not ErrCorrupt: %v", err)
		}
	})
}

// FuzzFrameHeader checks the header parser bounds every length it
// accepts.
func FuzzFrameHeader(f *testing.F) {
	var h [frameHeaderSize]byte
	putFrameHeader(h[:], frameHeader{typ: frameData, payloadLen: 100, rawLen: 1000})
	f.Add(h[:])
	f.Fuzz(func(t *testing.T, b []byte) {
		fh, err := parseFrameHeader(b, 0)
		if err != nil {
			return
		}
		if fh.payloadLen > maxMetaPayload || fh.rawLen > maxMetaPayload {
			t.Fatalf("accepted lengths %d, %d", fh.payloadLen, fh.rawLen)
		}
	})
}

// FuzzCopyCounter: the COPY parser never panics on any stream.
func FuzzCopyCounter(f *testing.F) {
	f.Add(binaryStream(3, 1), uint8(2))
	f.Fuzz(func(t *testing.T, b []byte, cols uint8) {
		c := newRowCounter(formatBinary, int(cols))
		if c.write(b) == nil {
			_, _ = c.finish()
		}
	})
}
