package quartz

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err  error
		want errKind
	}{
		{&pgconn.PgError{Code: "40P01"}, transient},
		{fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: "40001"}), transient},
		{&pgconn.PgError{Code: "23505"}, transient},
		{&pgconn.PgError{Code: "57P01"}, connection},
		{&pgconn.PgError{Code: "57P03"}, connection},
		{&pgconn.PgError{Code: "08006"}, connection},
		{&pgconn.PgError{Code: "53300"}, connection},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), connection},
		{fmt.Errorf("x: %w", pgconn.ErrConnClosed), connection},
		{&pgconn.PgError{Code: "42P01"}, fatal}, // undefined_table
		{&pgconn.PgError{Code: "25006"}, fatal}, // read-only: a standby
		{errors.New("cannot scan"), fatal},
	} {
		if got := classify(c.err); got != c.want {
			t.Errorf("classify(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
