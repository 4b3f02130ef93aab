package eventually

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestWaitReturnsOnceTheConditionHolds(t *testing.T) {
	looks := 0
	err := Wait("the third look", time.Minute, func() (bool, string) {
		looks++
		return looks == 3, fmt.Sprint(looks)
	})
	if err != nil || looks != 3 {
		t.Fatalf("Wait: %v after %d looks, want nil after 3", err, looks)
	}
}

func TestWaitNamesWhatTheTimeoutAndTheLastState(t *testing.T) {
	looks := 0
	err := Wait("the impossible", 5*time.Millisecond, func() (bool, string) {
		looks++
		return false, fmt.Sprintf("look %d", looks)
	})
	if err == nil {
		t.Fatal("Wait succeeded on a condition that never holds")
	}
	for _, want := range []string{"timed out after 5ms", "the impossible", fmt.Sprintf("last: look %d", looks)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
	if looks < 2 {
		t.Errorf("gave up after %d look(s); want a look after the timeout too", looks)
	}
}

func TestThatWithoutState(t *testing.T) {
	n := 0
	That(t, "the second look", time.Minute, func() bool { n++; return n == 2 })
	err := Wait("nothing", time.Millisecond, func() (bool, string) { return false, "" })
	if err == nil || strings.Contains(err.Error(), "last:") {
		t.Fatalf("Wait without a state: %v", err)
	}
}
