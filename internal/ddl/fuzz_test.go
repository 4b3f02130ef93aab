package ddl

import (
	"strings"
	"testing"
)

// FuzzFind: the lexer reads query texts recorded on the master, which
// may be anything a client sent. It must not panic, every statement it
// returns must be a piece of the text, and WithoutConcurrently must only
// ever remove one word.
func FuzzFind(f *testing.F) {
	for _, q := range []string{
		"ALTER TABLE a ADD c int; UPDATE a SET c = 1;\nCREATE INDEX i ON a (c)",
		"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; DROP TABLE x",
		"SELECT $q$;$q$, E'\\';', 'a''b', \"x;y\" /* /* ; */ */ -- ;\n; CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)",
		"$1$$", "E'", "/*", "U&'x'", "'unterminated; ALTER TABLE x",
	} {
		f.Add(q, "ALTER TABLE", 1)
		f.Add(q, "CREATE INDEX", 2)
	}
	f.Fuzz(func(t *testing.T, query, tag string, nth int) {
		for _, st := range Split(query) {
			if !strings.Contains(query, st) {
				t.Fatalf("statement %q is not in the text", st)
			}
		}
		if st, err := Find(query, tag, nth%8); err == nil {
			if !strings.Contains(query, st) {
				t.Fatalf("found %q, which is not in the text", st)
			}
			if out := WithoutConcurrently(st); len(st)-len(out) != 0 && len(st)-len(out) != len("CONCURRENTLY") {
				t.Fatalf("WithoutConcurrently(%q) = %q", st, out)
			}
		}
	})
}
