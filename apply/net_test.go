package apply_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/apply"
)

// The set-based apply (net.go) must leave the slave exactly as replaying
// every change in order would: these tests run random master workloads
// whose transactions land in few, large apply groups, so that one group
// holds many changes to the same keys, and compare master and slave.

const netSchema = `
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE TABLE hot (id int PRIMARY KEY, n int, note text);
CREATE TABLE kc (a int, b bytea, v text, PRIMARY KEY (b, a));
CREATE TABLE nopk (n int, s text);
CREATE TABLE vals (id int PRIMARY KEY, f float8, r real, num numeric, a int[], j jsonb, m mood, t timestamptz);
CREATE TABLE parent (id int PRIMARY KEY, name text);
CREATE TABLE child (id int PRIMARY KEY, parent int REFERENCES parent ON DELETE CASCADE ON UPDATE CASCADE, v int);
CREATE TABLE event (id bigserial PRIMARY KEY, kind text);
CREATE TABLE uq (id int PRIMARY KEY, code text UNIQUE, v int);
`

// netWorkload is one random master transaction of the workload, as SQL.
func netWorkload(rng *rand.Rand, swaps bool) string {
	k, k2 := rng.Intn(12), rng.Intn(12)
	b := func() string { return fmt.Sprintf(`'\x%02x%02x'`, rng.Intn(3), rng.Intn(3)) }
	floats := []string{"'NaN'", "'Infinity'", "'-Infinity'", "0", "-0.0", "1.5e300", "NULL"}
	f := func() string { return floats[rng.Intn(len(floats))] }
	n := 11
	if swaps {
		n++
	}
	switch rng.Intn(n) {
	case 0:
		return fmt.Sprintf(`INSERT INTO hot VALUES (%d, %d, 'i') ON CONFLICT (id) DO UPDATE SET n = EXCLUDED.n, note = hot.note || 'u'`, k, rng.Intn(100))
	case 1:
		return fmt.Sprintf(`UPDATE hot SET n = n + 1, note = NULL WHERE id = %d`, k)
	case 2:
		return fmt.Sprintf(`DELETE FROM hot WHERE id = %d`, k)
	case 3: // a key update, into a free key only
		return fmt.Sprintf(`UPDATE hot SET id = %d WHERE id = %d AND NOT EXISTS (SELECT 1 FROM hot WHERE id = %d)`, k2, k, k2)
	case 4:
		return fmt.Sprintf(`INSERT INTO kc VALUES (%d, %s, 'v') ON CONFLICT DO NOTHING;
			UPDATE kc SET b = %s, v = v || 'm' WHERE a = %d AND b = (SELECT b FROM kc WHERE a = %[4]d ORDER BY b LIMIT 1) AND NOT EXISTS (SELECT 1 FROM kc k WHERE k.a = %d AND k.b = %[3]s)`,
			k%3, b(), b(), k%3, k%3)
	case 5:
		return fmt.Sprintf(`DELETE FROM kc WHERE a = %d AND b = %s`, k%3, b())
	case 6: // a table without a key: duplicates, one-row deletes and updates
		switch rng.Intn(3) {
		case 0:
			return fmt.Sprintf(`INSERT INTO nopk VALUES (%d, 's'), (%[1]d, 's')`, k%4)
		case 1:
			return fmt.Sprintf(`DELETE FROM nopk WHERE ctid = (SELECT ctid FROM nopk WHERE n = %d LIMIT 1)`, k%4)
		}
		return fmt.Sprintf(`UPDATE nopk SET s = s || 'x' WHERE ctid = (SELECT ctid FROM nopk WHERE n = %d LIMIT 1)`, k%4)
	case 7:
		return fmt.Sprintf(`INSERT INTO vals VALUES (%d, %s, %s, %s, '{1,NULL,%d}', '{"k": [%d, "\u00e9"]}', 'busy', 'infinity')
			ON CONFLICT (id) DO UPDATE SET f = EXCLUDED.f, r = EXCLUDED.r, num = EXCLUDED.num, a = vals.a || %[5]d, j = vals.j || EXCLUDED.j, m = 'calm', t = '-infinity'`,
			k, f(), strings.ReplaceAll(f(), "1.5e300", "3.4e38"), strings.ReplaceAll(f(), "1.5e300", "'1.50'"), rng.Intn(9), rng.Intn(9))
	case 8: // foreign keys: cascaded deletes and key updates
		return fmt.Sprintf(`INSERT INTO parent VALUES (%d, 'p') ON CONFLICT DO NOTHING;
			INSERT INTO child VALUES (%d, %[1]d, 0) ON CONFLICT (id) DO UPDATE SET v = child.v + 1, parent = EXCLUDED.parent`, k%5, k)
	case 9:
		if rng.Intn(2) == 0 {
			return fmt.Sprintf(`DELETE FROM parent WHERE id = %d`, k%5)
		}
		return fmt.Sprintf(`UPDATE parent SET id = %d WHERE id = %d AND NOT EXISTS (SELECT 1 FROM parent WHERE id = %[1]d)`, k2%5+5, k%5)
	case 10:
		switch rng.Intn(8) {
		case 0: // in the middle of a group, with rows changed before and after
			return `UPDATE hot SET n = -1; TRUNCATE hot, nopk; INSERT INTO hot VALUES (99, 1, 'after truncate')`
		case 1:
			return `TRUNCATE parent CASCADE`
		}
		return `INSERT INTO event (kind) VALUES ('e')`
	default: // two rows trade a unique value other than the key
		return fmt.Sprintf(`INSERT INTO uq VALUES (%d, 'c%[1]d', 0), (%d, 'c%[2]d', 0) ON CONFLICT DO NOTHING;
			DO $$DECLARE ca text; cb text; BEGIN
				SELECT code INTO ca FROM uq WHERE id = %[1]d;
				SELECT code INTO cb FROM uq WHERE id = %[2]d;
				UPDATE uq SET code = 'swap' WHERE id = %[1]d;
				UPDATE uq SET code = ca, v = v + 1 WHERE id = %[2]d;
				UPDATE uq SET code = cb WHERE id = %[1]d;
			END$$`, k%4*2, k%4*2+1)
	}
}

// logBuffer collects an applier's log.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestNetApplyMatchesReplay runs random workloads of 300 transactions in
// rounds of 100, each round captured and then applied in large groups,
// and compares every table after each round. Without trades of unique
// values the set-based path must apply every group (no fallback to change
// by change); with them, the fallback makes it exact.
func TestNetApplyMatchesReplay(t *testing.T) {
	for _, tc := range []struct {
		name  string
		seed  int64
		swaps bool
	}{
		{"seed 1", 1, false},
		{"seed 2", 2, false},
		{"seed 3 with unique trades", 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, netSchema, true)
			rng := rand.New(rand.NewSource(tc.seed))
			conn := r.Conn(r.MasterURL)
			logs := &logBuffer{}
			cfg, _ := pgx.ParseConfig(r.SlaveURL)
			for round := range 3 {
				for range 100 {
					sql := netWorkload(rng, tc.swaps)
					if _, err := conn.Exec(context.Background(), sql); err != nil {
						t.Fatalf("round %d: %s: %v", round, sql, err)
					}
				}
				r.Capture()
				r.ApplyWith(apply.New(apply.Options{ConnConfig: cfg, Logger: slog.New(slog.NewTextHandler(logs, nil))}, apply.SpoolLog(r.Spool)))
				r.RequireEqual()
				if t.Failed() {
					t.Fatalf("round %d: the slave differs from the master", round)
				}
			}
			fallbacks := strings.Count(logs.String(), "applying change by change")
			if !tc.swaps && fallbacks > 0 {
				t.Errorf("%d groups fell back to change by change without unique trades; the set-based path is not what was tested:\n%s", fallbacks, logs)
			}
			if tc.swaps && fallbacks == 0 {
				t.Errorf("no group fell back to change by change, though rows traded unique values within groups")
			}
		})
	}
}
