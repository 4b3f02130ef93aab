package service

import (
	"net"
	"strings"
	"testing"
)

func TestClearTextWarning(t *testing.T) {
	cases := []struct {
		ip   string
		tls  bool
		warn bool
	}{
		{"127.0.0.1", false, false},
		{"::1", false, false},
		{"0.0.0.0", false, true},
		{"10.0.0.1", false, true},
		{"10.0.0.1", true, false},
	}
	for _, c := range cases {
		w := clearTextWarning(&net.TCPAddr{IP: net.ParseIP(c.ip), Port: 7700}, c.tls)
		if (w != "") != c.warn || (w != "" && !strings.Contains(w, "tls.cert")) {
			t.Errorf("%s tls=%v: %q", c.ip, c.tls, w)
		}
	}
}
