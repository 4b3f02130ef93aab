package checksum

import (
	"strings"
	"testing"
)

func table(name string, rows int64, sums map[int]string) Table {
	t := Table{Spec: Spec{Schema: "public", Name: name}, Rows: rows}
	for i := range t.Buckets {
		t.Buckets[i].Sum = "0"
	}
	for b, s := range sums {
		t.Buckets[b] = Partial{Rows: 1, Sum: s}
	}
	return t
}

func TestCompare(t *testing.T) {
	master := Report{
		Tables: []Table{table("same", 2, map[int]string{1: "10", 5: "20"}), table("changed", 2, map[int]string{3: "7", 9: "8"}), table("gone", 1, map[int]string{0: "1"})},
		Sequences: []Sequence{
			{Schema: "public", Name: "ahead", Value: 10}, {Schema: "public", Name: "behind", Value: 10}, {Schema: "public", Name: "missing", Value: 1},
		},
	}
	slave := Report{
		Tables:    []Table{table("same", 2, map[int]string{1: "10", 5: "20"}), table("changed", 2, map[int]string{3: "7", 9: "99"})},
		Sequences: []Sequence{{Schema: "public", Name: "ahead", Value: 12}, {Schema: "public", Name: "behind", Value: 9}},
	}
	var got []string
	for _, d := range Compare(master, slave) {
		got = append(got, d.Table+": "+d.What)
	}
	want := []string{
		"public.changed: 2 rows on the master, 2 on the slave; rows differ in key-hash buckets 9 of 16",
		"public.gone: missing on the slave",
		"public.behind: sequence at 9 on the slave, behind the master's 10",
		"public.missing: sequence missing on the slave",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("differences:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if d := Compare(master, master); len(d) != 0 {
		t.Fatalf("a report differs from itself: %v", d)
	}
}

// Equal tables in different capture histories still differ: the slave
// would go on applying changes that do not continue its data.
func TestCompareCaptureHistory(t *testing.T) {
	tables := []Table{table("same", 2, map[int]string{1: "10"})}
	master := Report{Epoch: 0xabc, Tables: tables}
	for _, tc := range []struct {
		slaveEpoch uint64
		differs    bool
	}{{0xabc, false}, {0xdef, true}, {0, true}} {
		diffs := Compare(master, Report{Epoch: tc.slaveEpoch, Tables: tables})
		if got := len(diffs) == 1 && diffs[0].Table == HistoryDifference; got != tc.differs || (!tc.differs && len(diffs) != 0) {
			t.Errorf("slave history %x: differences %+v", tc.slaveEpoch, diffs)
		}
	}
	// A master that does not report its history (0) is not compared.
	if diffs := Compare(Report{Tables: tables}, Report{Epoch: 0xdef, Tables: tables}); len(diffs) != 0 {
		t.Errorf("unknown master history: differences %+v", diffs)
	}
}
