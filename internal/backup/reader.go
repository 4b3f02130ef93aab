package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
)

// reader walks a backup file's structure: the file header, then for each
// table a begin frame, its data frames and an end frame, then the manifest
// and the end marker, then nothing. It checks every table's rows, bytes
// and SHA-256 against its end frame, and the manifest against the frames.
type reader struct {
	ctx    context.Context
	src    *frameSource
	tables []Table // the tables read so far, as their frames describe them
	cur    *tableSum
	held   *inFrame // the data frame whose payload chunk returned
	rest   []byte   // what Read has not returned of held
	man    *Manifest
	// expect is what pass 1 found: in pass 2 the file must say the same.
	expect *Manifest
	// progress gets rows and either raw bytes (rawBytes) or file bytes.
	progress Progress
	rawBytes bool
}

func newReader(ctx context.Context, r io.Reader, progress Progress) (*reader, error) {
	src, err := newFrameSource(r)
	if err != nil {
		return nil, err
	}
	p := orNoProgress(progress)
	p.Add(0, fileHeaderSize)
	return &reader{ctx: ctx, src: src, progress: p}, nil
}

func (r *reader) close() {
	r.release()
	r.src.close()
}

func (r *reader) release() {
	if r.held != nil {
		r.src.release(r.held)
		r.held, r.rest = nil, nil
	}
}

// frame reads the next frame; the end marker is a structural error here,
// since it is expected only after the manifest.
func (r *reader) frame() (*inFrame, error) {
	r.release()
	f, err := r.src.next(r.ctx)
	if err == io.EOF {
		return nil, corruptf(f.off, "end marker before the manifest")
	}
	if err != nil {
		return nil, err
	}
	if !r.rawBytes && f.typ != frameData {
		r.progress.Add(0, f.size)
	}
	return f, nil
}

// nextTable starts the next table and returns its header, or nil once the
// manifest and the end of the file have been read and checked.
func (r *reader) nextTable() (*TableHeader, error) {
	if r.cur != nil {
		return nil, fmt.Errorf("backup reader: table %s not read to its end", r.cur.hdr.String())
	}
	f, err := r.frame()
	if err != nil {
		return nil, err
	}
	switch f.typ {
	case frameBegin:
		var h TableHeader
		if err := json.Unmarshal(f.payload, &h); err != nil {
			return nil, corruptf(f.off, "table begin frame: %v", err)
		}
		if err := h.check(); err != nil {
			return nil, corruptf(f.off, "table begin frame: %v", err)
		}
		if e := r.expect; e != nil && (len(r.tables) >= len(e.Tables) || !e.Tables[len(r.tables)].TableHeader.equal(&h)) {
			return nil, corruptf(f.off, "table %s is not what the file held when it was verified; was it changed meanwhile?", h.String())
		}
		r.cur = newTableSum(h)
		return &h, nil
	case frameManifest:
		return nil, r.finish(f)
	}
	return nil, corruptf(f.off, "expected a table or the manifest, found a %s frame", frameName(f.typ))
}

// finish checks the manifest, the end marker and the end of the file.
func (r *reader) finish(f *inFrame) error {
	var m Manifest
	if err := json.Unmarshal(f.payload, &m); err != nil {
		return corruptf(f.off, "manifest: %v", err)
	}
	if err := checkManifest(&m, r.tables); err != nil {
		return corruptf(f.off, "manifest: %v", err)
	}
	if r.expect != nil && !reflect.DeepEqual(&m, r.expect) {
		return corruptf(f.off, "the manifest is not what the file held when it was verified; was it changed meanwhile?")
	}
	end, err := r.src.next(r.ctx)
	if err == nil {
		return corruptf(end.off, "expected the end marker after the manifest, found a %s frame", frameName(end.typ))
	}
	if err != io.EOF {
		return err
	}
	if !r.rawBytes {
		r.progress.Add(0, end.size)
	}
	r.man = &m
	return nil
}

// chunk returns the next raw chunk of the current table, valid until the
// next call, or io.EOF once the table's end frame has been checked.
func (r *reader) chunk() ([]byte, error) {
	if r.cur == nil {
		return nil, io.EOF
	}
	f, err := r.frame()
	if err != nil {
		return nil, err
	}
	t := r.cur.hdr.String()
	switch f.typ {
	case frameData:
		rows := r.cur.rows()
		if err := r.cur.add(f.payload); err != nil {
			r.src.release(f)
			return nil, corruptf(f.off, "table %s: %v", t, err)
		}
		if r.rawBytes {
			r.progress.Add(r.cur.rows()-rows, int64(len(f.payload)))
		} else {
			r.progress.Add(r.cur.rows()-rows, f.size)
		}
		r.held = f
		return f.payload, nil
	case frameEnd:
		return nil, r.endTable(f)
	}
	return nil, corruptf(f.off, "table %s: expected data or its end frame, found a %s frame", t, frameName(f.typ))
}

func (r *reader) endTable(f *inFrame) error {
	t := r.cur.hdr.String()
	var want TableEnd
	if err := json.Unmarshal(f.payload, &want); err != nil {
		return corruptf(f.off, "table %s: end frame: %v", t, err)
	}
	got, err := r.cur.finish()
	if err != nil {
		return corruptf(f.off, "table %s: %v", t, err)
	}
	switch {
	case got.SHA256 != want.SHA256:
		return corruptf(f.off, "table %s: its data does not match its SHA-256 (file %s, computed %s)", t, want.SHA256, got.SHA256)
	case got.Rows != want.Rows || got.RawBytes != want.RawBytes:
		return corruptf(f.off, "table %s: end frame says %d rows, %d bytes; the data holds %d rows, %d bytes",
			t, want.Rows, want.RawBytes, got.Rows, got.RawBytes)
	}
	if e := r.expect; e != nil && e.Tables[len(r.tables)].TableEnd != got {
		return corruptf(f.off, "table %s is not what the file held when it was verified; was it changed meanwhile?", t)
	}
	r.tables = append(r.tables, Table{TableHeader: r.cur.hdr, TableEnd: got})
	r.cur = nil
	return io.EOF
}

// Read reads the current table's raw COPY stream (an io.Reader for COPY
// FROM); io.EOF comes only after the end frame is checked.
func (r *reader) Read(p []byte) (int, error) {
	for len(r.rest) == 0 {
		b, err := r.chunk()
		if err != nil {
			return 0, err
		}
		r.rest = b
	}
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	return n, nil
}

// Verify reads a whole backup file and checks it without a database: the
// header's magic and version, every frame's CRC32C, every table's rows,
// bytes and SHA-256, the COPY structure of its data, the manifest against
// all of them, and that the file ends with the end marker. Errors about
// the file wrap ErrCorrupt and name the byte offset.
func Verify(ctx context.Context, r io.Reader) (Manifest, error) {
	return verify(ctx, r, nil)
}

func verify(ctx context.Context, in io.Reader, progress Progress) (Manifest, error) {
	r, err := newReader(ctx, in, progress)
	if err != nil {
		return Manifest{}, err
	}
	defer r.close()
	for {
		t, err := r.nextTable()
		if err != nil {
			return Manifest{}, err
		}
		if t == nil {
			return *r.man, nil
		}
		for {
			if _, err := r.chunk(); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return Manifest{}, err
			}
		}
	}
}
