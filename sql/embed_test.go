package sql

import (
	"strings"
	"testing"
)

// The trigger function pins every text setting, and nothing of the
// template's marker is left.
func TestCaptureRendersTextSettings(t *testing.T) {
	if strings.Contains(Capture, "{{") {
		t.Fatal("Capture still holds a template marker")
	}
	for _, want := range []string{"SET DateStyle = 'ISO, YMD'", "SET extra_float_digits = '3'", "SET search_path = pg_catalog, pg_temp\nAS $$"} {
		if !strings.Contains(Capture, want) {
			t.Errorf("Capture does not pin %q", want)
		}
	}
}
