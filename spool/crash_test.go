package spool

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary double as the helper process that the crash
// tests kill or starve of disk space.
func TestMain(m *testing.M) {
	switch os.Getenv("SPOOL_TEST_HELPER") {
	case "append":
		appendHelper(os.Getenv("SPOOL_TEST_DIR"))
		os.Exit(0)
	case "diskfull":
		diskFullHelper(os.Getenv("SPOOL_TEST_DIR"))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func crashOptions(dir string) Options {
	return Options{Dir: dir, SegmentSize: 64 << 10, RecordSize: 1 << 10, Logger: quietLogger}
}

func helperFail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}

// appendHelper appends generated transactions in small batches forever,
// printing each position once Sync has returned, and deletes old segments
// now and then, as a master does.
func appendHelper(dir string) {
	s, err := Open(crashOptions(dir))
	if err != nil {
		helperFail("open: %v", err)
	}
	ctx := context.Background()
	for batch := 0; ; batch++ {
		for range 1 + batch%16 {
			if _, err := s.Append(ctx, genFor(s.LastPosition()+1)); err != nil {
				helperFail("append: %v", err)
			}
		}
		if err := s.Sync(ctx); err != nil {
			helperFail("sync: %v", err)
		}
		fmt.Printf("durable %d\n", s.DurablePosition())
		if batch%50 == 49 && s.DurablePosition() > 300 {
			if err := s.TruncateBefore(s.DurablePosition() - 300); err != nil {
				helperFail("truncate: %v", err)
			}
		}
	}
}

// runHelper starts the helper in mode on dir and returns it with the
// highest position it reported durable so far.
type helper struct {
	cmd     *exec.Cmd
	lines   chan string
	stderr  strings.Builder
	durable uint64
}

func startHelper(t *testing.T, mode, dir string) *helper {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SPOOL_TEST_HELPER="+mode, "SPOOL_TEST_DIR="+dir)
	h := &helper{cmd: cmd, lines: make(chan string, 1024)}
	cmd.Stderr = &h.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
	}()
	return h
}

// awaitDurable reads the helper's output until it has reported n syncs.
func (h *helper) awaitDurable(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(time.Minute)
	for n > 0 {
		select {
		case line, ok := <-h.lines:
			if !ok {
				h.cmd.Wait()
				t.Fatalf("the helper exited before it had synced %d more times: %s", n, h.stderr.String())
			}
			if h.record(t, line) {
				n--
			}
		case <-timeout:
			t.Fatalf("the helper did not sync %d more times in a minute (durable %d)", n, h.durable)
		}
	}
}

// record notes a "durable N" line; it reports whether line was one.
func (h *helper) record(t *testing.T, line string) bool {
	v, ok := strings.CutPrefix(line, "durable ")
	if !ok {
		return false
	}
	p, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("helper said %q", line)
	}
	h.durable = max(h.durable, p)
	return true
}

// wait collects the helper's output until it exits.
func (h *helper) wait(t *testing.T) []string {
	var other []string
	for line := range h.lines {
		if !h.record(t, line) {
			other = append(other, line)
		}
	}
	h.cmd.Wait()
	return other
}

func TestCrashRecovery(t *testing.T) {
	iters := 30
	if testing.Short() || raceEnabled {
		iters = 10
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	var durable uint64
	var cuts countHandler
	for i := range iters {
		h := startHelper(t, "append", dir)
		// Killed after a number of syncs, so that every helper gets
		// somewhere however slow the machine, and then up to a few
		// milliseconds later, so that the kill lands anywhere in the
		// batches being written.
		h.awaitDurable(t, 1+rng.IntN(40))
		time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond)
		h.cmd.Process.Kill() // SIGKILL: no deferred cleanup, no final sync
		h.wait(t)
		if h.stderr.Len() > 0 {
			t.Fatalf("iteration %d: helper failed: %s", i, h.stderr.String())
		}
		durable = max(durable, h.durable)

		o := crashOptions(dir)
		o.Logger = slog.New(&cuts)
		s, err := Open(o)
		if err != nil {
			t.Fatalf("iteration %d: reopen after kill: %v", i, err)
		}
		last := s.LastPosition()
		if last < durable {
			t.Fatalf("iteration %d: spool ends at %d but %d was reported durable", i, last, durable)
		}
		// Every retained transaction, durable ones included, reads back
		// whole, in order, once; nothing unfinished shows.
		readRange(t, s, s.FirstPosition()-1, last)
		// And appending goes on where it stopped.
		appendN(t, s, last+3)
		if err := s.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		readRange(t, s, last, last+3)
		durable = last + 3
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d kills, %d transactions, %d recoveries cut a torn or unfinished tail", iters, durable, cuts.n.Load())
}

// countHandler counts the warnings that recovery cut something off.
type countHandler struct{ n atomic.Int64 }

func (c *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (c *countHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "cut off") {
		c.n.Add(1)
	}
	return nil
}
func (c *countHandler) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *countHandler) WithGroup(string) slog.Handler      { return c }

// diskFullHelper appends with a file size limit (RLIMIT_FSIZE: writes past
// it fail with EFBIG, as on a full disk) until appending fails, then checks
// that the spool refuses to write any more.
func diskFullHelper(dir string) {
	lim := syscall.Rlimit{Cur: 300 << 10, Max: 300 << 10}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		helperFail("setrlimit: %v", err)
	}
	o := crashOptions(dir)
	o.SegmentSize = 1 << 20
	s, err := Open(o)
	if err != nil {
		helperFail("open: %v", err)
	}
	ctx := context.Background()
	for {
		_, err := s.Append(ctx, genFor(s.LastPosition()+1))
		if err == nil && s.LastPosition()%5 == 0 {
			err = s.Sync(ctx)
			if err == nil {
				fmt.Printf("durable %d\n", s.DurablePosition())
			}
		}
		if err == nil {
			continue
		}
		fmt.Printf("failed: %v\n", err)
		if _, err := s.Append(ctx, genFor(s.LastPosition()+1)); err == nil {
			helperFail("append after a write error succeeded")
		}
		if err := s.Sync(ctx); err == nil {
			helperFail("sync after a write error succeeded")
		}
		return
	}
}

func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	h := startHelper(t, "diskfull", dir)
	out := h.wait(t)
	if h.stderr.Len() > 0 || h.cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("helper: %s", h.stderr.String())
	}
	if len(out) != 1 || !strings.Contains(out[0], "file too large") {
		t.Fatalf("helper output %q, want one write error", out)
	}
	t.Logf("helper: %s after %d durable", out[0], h.durable)
	s := openT(t, crashOptions(dir))
	last := s.LastPosition()
	if last < h.durable || h.durable == 0 {
		t.Fatalf("spool ends at %d, %d was reported durable", last, h.durable)
	}
	readRange(t, s, 0, last)
	appendN(t, s, last+10)
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	readRange(t, s, 0, last+10)
}
