package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/change"
)

var quietLogger = slog.New(slog.DiscardHandler)

func openT(t testing.TB, o Options) *Spool {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quietLogger
	}
	s, err := Open(o)
	if err != nil {
		t.Fatalf("open spool: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// txnSize gives each position a deterministic number of changes: mostly a
// few, sometimes hundreds or thousands (spanning records).
func txnSize(pos uint64) int {
	switch {
	case pos%251 == 0:
		return 5000
	case pos%97 == 0:
		return 400 + int(pos%300)
	case pos%13 == 0:
		return 0 // an empty transaction is still a transaction
	}
	return 1 + int(pos%5)
}

func xidFor(pos uint64) uint64 { return pos*7 + 1000 }

// epochFor is the capture epoch generated transactions carry.
func epochFor(pos uint64) uint64 { return 1<<62 | pos*3 }

// legacyHeaders makes checkTxn expect epoch 0: spools written before
// epochs (begin items 'B') are read with it.
var legacyHeaders bool

// genSource yields the deterministic content of the transaction at pos
// lazily, so that large ones are never held whole.
type genSource struct {
	pos  uint64
	n, i int
	c    change.Change
	vals []change.Value
}

func newGen(pos uint64, n int) *genSource {
	return &genSource{pos: pos, n: n, vals: make([]change.Value, 3)}
}

func genFor(pos uint64) *genSource { return newGen(pos, txnSize(pos)) }

func (g *genSource) Header() change.TxnHeader {
	return change.TxnHeader{XID: xidFor(g.pos), CommitTime: time.UnixMicro(1_700_000_000_000_000 + int64(g.pos)).UTC(), LSN: g.pos * 16,
		Epoch: epochFor(g.pos)}
}

var genCols = []string{"id", "pos", "payload"}

func (g *genSource) Next() (*change.Change, error) {
	if g.i >= g.n {
		return nil, io.EOF
	}
	g.i++
	g.vals[0] = change.Text(strconv.Itoa(g.i))
	g.vals[1] = change.Text(strconv.FormatUint(g.pos, 10))
	g.vals[2] = change.Text(fmt.Sprintf("row %d of txn %d: %x", g.i, g.pos, g.pos*uint64(g.i)*2654435761))
	if g.i%11 == 0 {
		g.vals[2] = change.Null
	}
	g.c = change.Change{Op: change.Insert, Schema: "public", Table: "qrtz_fired_triggers", Columns: genCols, New: g.vals}
	return &g.c, nil
}

// nextInOrder reads the next transaction from r, which must be at want,
// and checks its contents.
func nextInOrder(ctx context.Context, r *Reader, want uint64) error {
	pos, src, err := r.Next(ctx)
	if err != nil {
		return err
	}
	if pos != want {
		return fmt.Errorf("out of order: got position %d, want %d", pos, want)
	}
	return checkTxn(pos, src)
}

// checkTxn reads src and compares it with the generated content for pos.
func checkTxn(pos uint64, src change.TxnSource) error {
	want := genFor(pos)
	wantHdr := want.Header()
	if legacyHeaders {
		wantHdr.Epoch = 0
	}
	if src.Header() != wantHdr {
		return fmt.Errorf("txn %d: header %+v, want %+v", pos, src.Header(), wantHdr)
	}
	for i := 0; ; i++ {
		got, gerr := src.Next()
		exp, eerr := want.Next()
		if gerr == io.EOF && eerr == io.EOF {
			return nil
		}
		if gerr != nil || eerr != nil {
			return fmt.Errorf("txn %d change %d: got err %v, want err %v", pos, i, gerr, eerr)
		}
		if !sameChange(got, exp) {
			return fmt.Errorf("txn %d change %d: got %+v, want %+v", pos, i, got, exp)
		}
	}
}

func sameChange(a, b *change.Change) bool {
	if a.Op != b.Op || a.Schema != b.Schema || a.Table != b.Table || len(a.Columns) != len(b.Columns) ||
		len(a.New) != len(b.New) || len(a.KeyColumns) != len(b.KeyColumns) || len(a.OldKey) != len(b.OldKey) {
		return false
	}
	for i := range a.Columns {
		if a.Columns[i] != b.Columns[i] || a.New[i] != b.New[i] {
			return false
		}
	}
	for i := range a.KeyColumns {
		if a.KeyColumns[i] != b.KeyColumns[i] || a.OldKey[i] != b.OldKey[i] {
			return false
		}
	}
	return true
}

// appendN appends generated transactions up to position to (inclusive).
func appendN(t testing.TB, s *Spool, to uint64) {
	t.Helper()
	ctx := context.Background()
	for p := s.LastPosition() + 1; p <= to; p++ {
		got, err := s.Append(ctx, genFor(p))
		if err != nil || got != p {
			t.Fatalf("append %d: got position %d, %v", p, got, err)
		}
	}
}

// readRange reads every transaction after `after` up to `to` and checks
// that they are exactly after+1..to with the generated content.
func readRange(t testing.TB, s *Spool, after, to uint64) {
	t.Helper()
	r, err := s.NewReader(after)
	if err != nil {
		t.Fatalf("new reader at %d: %v", after, err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for want := after + 1; want <= to; want++ {
		pos, src, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("read after %d: want %d: %v", after, want, err)
		}
		if pos != want {
			t.Fatalf("read after %d: got position %d, want %d", after, pos, want)
		}
		if err := checkTxn(pos, src); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing more is durable.
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if pos, _, err := r.Next(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read after %d: past %d got %d, %v; want nothing", after, to, pos, err)
	}
}

// readAll reads the whole spool, which must hold exactly the generated
// transactions FirstPosition()..to.
func readAll(t testing.TB, s *Spool, to uint64) {
	t.Helper()
	r, err := s.NewReader(s.FirstPosition() - 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for want := s.FirstPosition(); want <= to; want++ {
		pos, src, err := r.Next(context.Background())
		if err != nil || pos != want {
			t.Fatalf("got position %d, %v; want %d", pos, err, want)
		}
		if err := checkTxn(pos, src); err != nil {
			t.Fatal(err)
		}
	}
	if s.DurablePosition() != to {
		t.Fatalf("durable position %d, want %d", s.DurablePosition(), to)
	}
}

// segFiles lists the segment files in dir.
func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if _, _, _, ok := parseSegName(d.Name()); ok {
			names = append(names, d.Name())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}
