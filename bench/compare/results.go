package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/schedsync/schedsync/bench/benchkit"
)

// lagMode is the part of lagbench's JSON this command reads.
type lagMode struct {
	Mode string // schedsync-trigger, schedsync-logical, native
	Lag  struct {
		Samples, SentAt []time.Duration
	}
	Backlog struct {
		Bench   struct{ Txns int64 }
		CatchUp time.Duration
	}
	BigTxn *struct {
		Rows            int64
		Commit, Visible time.Duration
		PeakRSS         map[string]int64
	}
}

// tpsMeasurement is the part of tpsbench's JSON this command reads.
type tpsMeasurement struct {
	Mode string // none, triggers, trigger, decoding, logical, native
	TPS  float64
}

type backupResult struct{ Schedsync, PgDump time.Duration }

type results struct {
	Machine, PG string
	Started     time.Time
	Rounds      int
	Lag         []lagMode
	TPS         []tpsMeasurement
	Backup      backupResult
	ShipMBps    float64
	// StealPercent is the CPU time the hypervisor took from this VM
	// during the run, in % of all CPU time.
	StealPercent float64
	// Carried names the parts taken from an earlier run (-skip), and
	// when that run was.
	Carried map[string]time.Time `json:",omitempty"`
}

// fillSkipped takes the parts this run skipped from the results saved
// by an earlier one, if there are any.
func (r *results) fillSkipped(path string, skip map[string]bool) error {
	if len(skip) == 0 {
		return nil
	}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	var old results
	if err := json.Unmarshal(b, &old); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	carry := func(part string, have bool) {
		if !have {
			return
		}
		if r.Carried == nil {
			r.Carried = map[string]time.Time{}
		}
		when := old.Started
		if t, ok := old.Carried[part]; ok {
			when = t
		}
		r.Carried[part] = when
	}
	if skip["lag"] {
		r.Lag = old.Lag
		carry("lag", len(old.Lag) > 0)
	}
	if skip["tps"] {
		r.TPS = old.TPS
		carry("tps", len(old.TPS) > 0)
	}
	if skip["backup"] {
		r.Backup = old.Backup
		carry("backup", old.Backup.PgDump > 0)
	}
	if skip["ship"] {
		r.ShipMBps = old.ShipMBps
		carry("ship", old.ShipMBps > 0)
	}
	return nil
}

// save writes every figure of the run.
func (r results) save(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// label is lagbench's name of a system.
func label(system string) string {
	if system == "native" {
		return system
	}
	return "schedsync-" + system
}

// figure is one row of the table: a value per system (NaN-free: ok says
// whether there is one), how it compares with native, and the target.
type figure struct {
	name    string
	unit    string
	vals    map[string]float64 // by system
	digits  int
	ratio   bool               // show trigger/native and logical/native
	lowIsOK bool               // the ratio must be at most limit (else at least)
	limit   map[string]float64 // the ratio's target by system, if any
	target  string
}

// medianOf is the median of f over the lagbench results of a system
// that have the figure.
func (r results) medianOf(system string, f func(lagMode) (float64, bool)) (float64, bool) {
	var v []float64
	for _, m := range r.Lag {
		if m.Mode != label(system) {
			continue
		}
		if x, ok := f(m); ok {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return 0, false
	}
	return benchkit.Median(v), true
}

// quantile is the nearest-rank quantile q of durations, in ms.
func quantile(d []time.Duration, q float64) (float64, bool) {
	if len(d) == 0 {
		return 0, false
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.999999) - 1
	return float64(s[max(0, min(i, len(s)-1))]) / 1e6, true
}

func (r results) figures() []figure {
	var fs []figure
	lagFig := func(name, unit string, digits int, f func(lagMode) (float64, bool)) figure {
		fg := figure{name: name, unit: unit, digits: digits, vals: map[string]float64{}}
		for _, s := range systems {
			if v, ok := r.medianOf(s, f); ok {
				fg.vals[s] = v
			}
		}
		return fg
	}
	if len(r.Lag) > 0 {
		catch := lagFig("catch-up of a 20,000-transaction pgbench backlog (-c 4, scale 10)", "tx/s", 0, func(m lagMode) (float64, bool) {
			return float64(m.Backlog.Bench.Txns) / m.Backlog.CatchUp.Seconds(), m.Backlog.CatchUp > 0
		})
		catch.ratio, catch.limit, catch.target = true, map[string]float64{"trigger": 2, "logical": 2}, "≥ 2× native"
		fs = append(fs, catch)
		big := lagFig("one 1M-row UPDATE, commit → visible on the slave", "s", 1, func(m lagMode) (float64, bool) {
			if m.BigTxn == nil {
				return 0, false
			}
			return m.BigTxn.Visible.Seconds(), true
		})
		big.ratio, big.lowIsOK, big.limit, big.target = true, true, map[string]float64{"trigger": 0.5, "logical": 0.5}, "≤ 0.5× native"
		fs = append(fs, big)
		rss := figure{name: "peak RSS of a service (the larger of master and slave, over the rounds)", unit: "MiB", vals: map[string]float64{}, target: "≤ 64 MiB"}
		for _, m := range r.Lag {
			if m.BigTxn == nil {
				continue
			}
			for _, b := range m.BigTxn.PeakRSS {
				s := strings.TrimPrefix(m.Mode, "schedsync-")
				rss.vals[s] = max(rss.vals[s], float64(b)/(1<<20))
			}
		}
		fs = append(fs, rss)
		p50 := lagFig("lag p50 at 1,000 tx/s (commit → NOTIFY from the slave)", "ms", 2, func(m lagMode) (float64, bool) { return quantile(m.Lag.Samples, 0.5) })
		p50.ratio = true
		p99 := lagFig("lag p99 at 1,000 tx/s", "ms", 2, func(m lagMode) (float64, bool) { return quantile(m.Lag.Samples, 0.99) })
		p99.ratio, p99.lowIsOK, p99.limit, p99.target = true, true, map[string]float64{"trigger": 2, "logical": 1}, "≤ 1× native (logical), ≤ 2× (trigger); alone ≤ 5 ms / ≤ 10 ms"
		fs = append(fs, p50, p99)
	}
	if len(r.TPS) > 0 {
		tps := map[string][]float64{}
		for _, m := range r.TPS {
			tps[m.Mode] = append(tps[m.Mode], m.TPS)
		}
		if none := tps["none"]; len(none) > 0 {
			f := figure{name: "master pgbench tps with the pipeline running ÷ with nothing (-c 4, scale 10)", unit: "×", digits: 3, vals: map[string]float64{}, ratio: true,
				limit: map[string]float64{"trigger": 0.9, "logical": 1.0}, target: "≥ 0.9× native's (trigger), ≥ 1.0× (logical)"}
			base := benchkit.Median(none)
			for _, s := range systems {
				if v := tps[s]; len(v) > 0 {
					f.vals[s] = benchkit.Median(v) / base
				}
			}
			fs = append(fs, f)
			// The floors under each capture mode, with no schedsync
			// process at all: what the targets above leave for the rest
			// of the pipeline.
			floor := figure{name: "the same ratio with capture alone and nothing reading it: triggers installed, no service (trigger); pg_recvlogical on a pgoutput slot (logical); native column: native's whole pipeline, as above",
				unit: "×", digits: 3, vals: map[string]float64{}, ratio: true}
			for col, mode := range map[string]string{"trigger": "triggers", "logical": "decoding", "native": "native"} {
				if v := tps[mode]; len(v) > 0 {
					floor.vals[col] = benchkit.Median(v) / base
				}
			}
			fs = append(fs, floor)
		}
	}
	if r.Backup.PgDump > 0 {
		fs = append(fs, figure{name: "backup + restore (scale 20); native column: pg_dump -Fc + pg_restore --data-only", unit: "s", digits: 1, ratio: true, lowIsOK: true,
			vals:  map[string]float64{"trigger": r.Backup.Schedsync.Seconds(), "native": r.Backup.PgDump.Seconds()},
			limit: map[string]float64{"trigger": 0.6}, target: "≤ 0.6× pg_dump + pg_restore (either mode: capture plays no part)"})
	}
	if r.ShipMBps > 0 {
		fs = append(fs, figure{name: "shipping a 1 GiB spool backlog, shipping alone (either mode)", unit: "MB/s", vals: map[string]float64{"trigger": r.ShipMBps}, target: "≥ 500 MB/s"})
	}
	return fs
}

// table is the markdown table of every figure.
func (r results) table() string {
	var b strings.Builder
	b.WriteString("| figure | schedsync trigger | schedsync logical | native | trigger ÷ native | logical ÷ native | target |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, f := range r.figures() {
		cell := func(s string) string {
			v, ok := f.vals[s]
			if !ok {
				return "—"
			}
			return fmt.Sprintf("%.*f %s", f.digits, v, f.unit)
		}
		ratio := func(s string) string {
			v, ok := f.vals[s]
			n, nok := f.vals["native"]
			if !f.ratio || !ok || !nok || n == 0 {
				return "—"
			}
			q := v / n
			out := fmt.Sprintf("%.2f×", q)
			if lim, ok := f.limit[s]; ok {
				met := q >= lim
				if f.lowIsOK {
					met = q <= lim
				}
				out += map[bool]string{true: " ✔", false: " ✘"}[met]
			}
			return out
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", f.name, cell("trigger"), cell("logical"), cell("native"), ratio("trigger"), ratio("logical"), f.target)
	}
	return b.String()
}

// Markers of the sections this command rewrites.
const (
	beginMark = "<!-- make bench: begin (bench/compare rewrites this section) -->"
	endMark   = "<!-- make bench: end -->"
)

// section is the BENCHMARKS.md part: how, where, the table, the plot.
func (r results) section(plot string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Side by side with native logical replication (`make bench`)\n\n")
	fmt.Fprintf(&b, "Measured %s by `make bench` (`go run ./bench/compare -rounds %d`): %d rounds, each system on its own throwaway clusters, the order rotated every round; figures are medians over the rounds. %s; %s.\n\n",
		r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Rounds, r.Rounds, r.Machine, r.PG)
	fmt.Fprintf(&b, "CPU steal during the run (time the hypervisor gave this VM's CPUs to other guests, /proc/stat): %.1f %% of all CPU time. Figures from a run with much steal are slower across the board; the ratios, taken within the run, hold up better.\n\n", r.StealPercent)
	b.WriteString(r.table())
	for _, part := range []string{"lag", "tps", "backup", "ship"} {
		if t, ok := r.Carried[part]; ok {
			fmt.Fprintf(&b, "\nThe %s figures are from the run of %s (this run skipped them).\n", part, t.UTC().Format("2006-01-02 15:04 UTC"))
		}
	}
	if plot != "" {
		fmt.Fprintf(&b, "\nLag over time at 1,000 tx/s, every system, every round:\n\n![lag over time](%s)\n", plot)
	}
	return b.String()
}

// headline is the README part.
func (r results) headline() string {
	return fmt.Sprintf("Measured by `make bench` on %s (%s), %.1f %% CPU steal during the run; details in [BENCHMARKS.md](BENCHMARKS.md).\n\n%s",
		strings.TrimPrefix(r.Machine, "machine: "), r.PG, r.StealPercent, r.table())
}

// rewriteSection replaces the text between the markers in path, or adds
// the section at the end when the file has none.
func rewriteSection(path, body string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	block := beginMark + "\n" + body + endMark
	i, j := strings.Index(s, beginMark), strings.Index(s, endMark)
	if i >= 0 && j > i {
		s = s[:i] + block + s[j+len(endMark):]
	} else {
		s = strings.TrimRight(s, "\n") + "\n\n" + block + "\n"
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
