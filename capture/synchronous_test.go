package capture

import "testing"

func TestNamesStandby(t *testing.T) {
	cases := []struct {
		value string
		want  bool
	}{
		{"", false},
		{"schedsync_capture", true},
		{"SchedSync_Capture", true},
		{"*", true},
		{"a, b", false},
		{"a, schedsync_capture", true},
		{"FIRST 1 (a, schedsync_capture)", true},
		{"ANY 2 (a, b)", false},
		{"any 1 (*)", true},
		{"2 (x, schedsync_capture)", true},
		{`"schedsync_capture"`, true},
		{`"SCHEDSYNC_CAPTURE"`, false},
		{`"a, schedsync_capture"`, false},
		{"schedsync_capture_2", false},
	}
	for _, c := range cases {
		if got := NamesStandby(c.value, ApplicationName); got != c.want {
			t.Errorf("NamesStandby(%q) = %v, want %v", c.value, got, c.want)
		}
	}
}
