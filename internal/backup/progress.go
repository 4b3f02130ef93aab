package backup

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Progress is told how a backup, a verification or a load advances. The
// calls come in order (Begin, Add..., End), never two at once.
type Progress interface {
	// Begin starts a phase ("backup", "verify", "load"). Zero totals are
	// unknown; Totals.Estimate says they are guesses.
	Begin(phase string, total Totals)
	// Add reports rows and bytes done since the last call. What the bytes
	// are depends on the phase: raw COPY bytes for backup and load, file
	// bytes for verify.
	Add(rows, bytes int64)
	End()
}

// Totals are what a phase expects to do.
type Totals struct {
	Rows, Bytes int64
	Estimate    bool
}

// NewProgress reports to w: a progress bar with rate and ETA when w is a
// terminal, otherwise a plain line every LogInterval.
func NewProgress(w io.Writer) Progress {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return &barProgress{w: w}
	}
	return &lineProgress{w: w, every: LogInterval}
}

// LogInterval is how often the plain progress lines are written.
const LogInterval = 2 * time.Second

// Stopper is what a Progress may also implement: Stop ends a phase that
// failed, leaving the terminal tidy for the error that follows.
type Stopper interface{ Stop() }

// stop ends a failed phase.
func stop(p Progress) {
	if s, ok := p.(Stopper); ok {
		s.Stop()
	}
}

type noProgress struct{}

func (noProgress) Begin(string, Totals) {}
func (noProgress) Add(int64, int64)     {}
func (noProgress) End()                 {}

func orNoProgress(p Progress) Progress {
	if p == nil {
		return noProgress{}
	}
	return p
}

// counts is the state both reporters keep.
type counts struct {
	phase       string
	total       Totals
	rows, bytes int64
	start       time.Time
	active      bool // between Begin and End or Stop
}

func (c *counts) begin(phase string, total Totals) {
	*c = counts{phase: phase, total: total, start: time.Now(), active: true}
}

func (c *counts) rowsText() string {
	s := fmt.Sprintf("%s rows", count(c.rows))
	if c.total.Rows > 0 {
		s = fmt.Sprintf("%s/%s%s rows", count(c.rows), approx(c.total.Estimate), count(c.total.Rows))
	}
	return s
}

// barProgress draws a progressbar/v3 bar: bytes with rate and ETA, rows in
// the description.
type barProgress struct {
	w     io.Writer
	c     counts
	bar   *progressbar.ProgressBar
	drawn time.Time
}

func (p *barProgress) Begin(phase string, total Totals) {
	p.c.begin(phase, total)
	max := total.Bytes
	if max <= 0 {
		max = -1 // a spinner: the total is not known
	}
	p.bar = progressbar.NewOptions64(max,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(phase),
		progressbar.OptionShowBytes(true),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetWidth(25),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }),
	)
}

func (p *barProgress) Add(rows, bytes int64) {
	p.c.rows += rows
	p.c.bytes += bytes
	if max := p.bar.GetMax64(); max > 0 && p.c.bytes >= max {
		// Only End finishes the bar, with the final counts: an estimate
		// was low, or the total is reached and End comes next.
		p.bar.ChangeMax64(p.c.bytes + p.c.bytes/20 + 1)
	}
	if time.Since(p.drawn) >= 200*time.Millisecond {
		p.drawn = time.Now()
		p.bar.Describe(p.c.phase + " " + p.c.rowsText())
	}
	_ = p.bar.Add64(bytes)
}

func (p *barProgress) End() {
	p.c.active = false
	if p.bar.IsFinished() {
		return
	}
	p.bar.Describe(p.c.phase + " " + p.c.rowsText())
	if p.bar.GetMax64() > 0 {
		p.bar.ChangeMax64(max(p.c.bytes, 1))
	}
	_ = p.bar.Finish()
}

// Stop leaves the bar as it is and ends its line.
func (p *barProgress) Stop() {
	if p.c.active && !p.bar.IsFinished() {
		_ = p.bar.Exit()
	}
	p.c.active = false
}

// lineProgress writes a line every so often, for logs and pipes.
type lineProgress struct {
	w     io.Writer
	every time.Duration
	c     counts
	last  time.Time
}

func (p *lineProgress) Begin(phase string, total Totals) {
	p.c.begin(phase, total)
	p.last = time.Now()
}

func (p *lineProgress) Add(rows, bytes int64) {
	p.c.rows += rows
	p.c.bytes += bytes
	if time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	elapsed := time.Since(p.c.start).Seconds()
	rate := float64(p.c.bytes) / max(elapsed, 1e-3)
	line := fmt.Sprintf("%s: %s", p.c.phase, size(p.c.bytes))
	if t := p.c.total.Bytes; t > 0 {
		line += fmt.Sprintf(" of %s%s (%.0f%%)", approx(p.c.total.Estimate), size(t), 100*min(float64(p.c.bytes)/float64(t), 1))
	}
	line += fmt.Sprintf(", %s, %s/s", p.c.rowsText(), size(int64(rate)))
	if t := p.c.total.Bytes; t > p.c.bytes && rate > 0 {
		line += fmt.Sprintf(", ETA %s", time.Duration(float64(t-p.c.bytes)/rate*float64(time.Second)).Round(time.Second))
	}
	fmt.Fprintln(p.w, line)
}

func (p *lineProgress) End() {
	p.c.active = false
	d := time.Since(p.c.start)
	fmt.Fprintf(p.w, "%s: done, %s, %s rows in %s\n", p.c.phase, size(p.c.bytes), count(p.c.rows), d.Round(10*time.Millisecond))
}

func (p *lineProgress) Stop() {
	if !p.c.active {
		return
	}
	p.c.active = false
	fmt.Fprintf(p.w, "%s: stopped after %s, %s rows\n", p.c.phase, size(p.c.bytes), count(p.c.rows))
}

func approx(estimate bool) string {
	if estimate {
		return "~"
	}
	return ""
}

// FormatBytes prints a byte count with a binary unit: "12.3 MiB".
func FormatBytes(n int64) string { return size(n) }

// size prints a byte count with a binary unit.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// count prints a number with thousands separators.
func count(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
