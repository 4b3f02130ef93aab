package checksum

import (
	"fmt"
	"strings"
)

// Difference is one table or sequence that does not match.
type Difference struct {
	Table string `json:"table"`
	// What is a one-line explanation.
	What string `json:"what"`
	// Buckets are the key-hash buckets that differ (of Buckets).
	Buckets []int `json:"buckets,omitempty"`
}

// HistoryDifference is the Table of a Difference that is not a table's:
// master and slave are in different capture histories.
const HistoryDifference = "(capture history)"

// Compare lists how the slave's report differs from the master's. A table
// or sequence missing on one side differs; a slave sequence ahead of the
// master's is fine (it must never be behind).
func Compare(master, slave Report) []Difference {
	var diffs []Difference
	if master.Epoch != 0 && slave.Epoch != master.Epoch {
		// Equal rows would be chance: the slave would go on to apply
		// changes that do not continue its data.
		diffs = append(diffs, Difference{Table: HistoryDifference, What: fmt.Sprintf(
			"the master's changes belong to capture history %016x, the slave's data to %016x; run schedsync resync",
			master.Epoch, slave.Epoch)})
	}
	slaveTables := map[string]Table{}
	for _, t := range slave.Tables {
		slaveTables[t.Schema+"."+t.Name] = t
	}
	for _, m := range master.Tables {
		name := m.Schema + "." + m.Name
		s, ok := slaveTables[name]
		if !ok {
			diffs = append(diffs, Difference{Table: name, What: "missing on the slave"})
			continue
		}
		var buckets []int
		for i := range m.Buckets {
			if m.Buckets[i] != s.Buckets[i] {
				buckets = append(buckets, i)
			}
		}
		if len(buckets) > 0 {
			diffs = append(diffs, Difference{Table: name, Buckets: buckets,
				What: fmt.Sprintf("%d rows on the master, %d on the slave; rows differ in key-hash buckets %s of %d",
					m.Rows, s.Rows, joinInts(buckets), Buckets)})
		}
	}
	slaveSeqs := map[string]int64{}
	for _, s := range slave.Sequences {
		slaveSeqs[s.Schema+"."+s.Name] = s.Value
	}
	for _, m := range master.Sequences {
		name := m.Schema + "." + m.Name
		v, ok := slaveSeqs[name]
		switch {
		case !ok:
			diffs = append(diffs, Difference{Table: name, What: "sequence missing on the slave"})
		case v < m.Value:
			diffs = append(diffs, Difference{Table: name, What: fmt.Sprintf("sequence at %d on the slave, behind the master's %d", v, m.Value)})
		}
	}
	return diffs
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ", ")
}
