// Package eventually is the one polling helper of the tests: it waits for
// a condition that another goroutine, process or server makes true, and
// fails the test naming what it waited for, how long, and the last state it
// saw. The timeout is a safety net against a hang, never a measurement:
// give tens of seconds for what normally takes milliseconds, so that a busy
// machine does not fail the test. It is test support only; non-test code
// must never import it.
package eventually

import (
	"fmt"
	"testing"
	"time"
)

// maxPoll bounds the pause between two looks. Pauses start at a millisecond
// and double, so a quick condition is seen at once, and a slow one (a
// subprocess, a query) is not run back to back.
const maxPoll = 100 * time.Millisecond

// True polls cond until it reports ok, and fails the test (t.Fatalf) if it
// has not after timeout, with the last state cond described. cond is
// always looked at once more after the timeout before the test fails. Call
// it from the test's goroutine; cond may fail the test itself, for example
// when what it waits for can no longer happen.
func True(t testing.TB, what string, timeout time.Duration, cond func() (ok bool, last string)) {
	t.Helper()
	if err := Wait(what, timeout, cond); err != nil {
		t.Fatal(err)
	}
}

// That is True for a condition with no state worth reporting.
func That(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	if err := Wait(what, timeout, func() (bool, string) { return cond(), "" }); err != nil {
		t.Fatal(err)
	}
}

// Wait polls cond like True but returns the failure instead of failing the
// test, for a goroutine other than the test's (which must not call
// t.Fatal) or a caller that has more to say.
func Wait(what string, timeout time.Duration, cond func() (ok bool, last string)) error {
	deadline := time.Now().Add(timeout)
	for pause := time.Millisecond; ; pause = min(2*pause, maxPoll) {
		ok, last := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			if last == "" {
				return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
			}
			return fmt.Errorf("timed out after %s waiting for %s; last: %s", timeout, what, last)
		}
		time.Sleep(pause)
	}
}
