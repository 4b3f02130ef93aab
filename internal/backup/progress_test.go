package backup

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestLineProgress(t *testing.T) {
	var out bytes.Buffer
	p := &lineProgress{w: &out, every: time.Nanosecond}
	p.Begin("load", Totals{Rows: 2_000_000, Bytes: 200 << 20})
	time.Sleep(time.Millisecond)
	p.Add(1_000_000, 100<<20)
	p.End()
	p.Stop() // after End: nothing
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "load: 100.0 MiB of 200.0 MiB (50%), 1,000,000/2,000,000 rows, ") ||
		!strings.Contains(lines[0], "/s, ETA ") || !strings.HasPrefix(lines[1], "load: done, 100.0 MiB, 1,000,000 rows in ") {
		t.Errorf("progress lines:\n%s", out.String())
	}
	out.Reset()
	p.Begin("backup", Totals{Rows: 10, Bytes: 1000, Estimate: true})
	p.Add(3, 300)
	p.Stop()
	if !strings.Contains(out.String(), "of ~1000 B (30%), 3/~10 rows") || !strings.HasSuffix(out.String(), "backup: stopped after 300 B, 3 rows\n") {
		t.Errorf("progress lines:\n%s", out.String())
	}
}

func TestFormatting(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 30: "3.0 GiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 2000220: "2,000,220"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}
