package capture

import (
	"reflect"
	"testing"

	"github.com/schedsync/schedsync/internal/change"
)

func TestParseRecord(t *testing.T) {
	T, N := change.Text, change.Null
	cases := []struct {
		in   string
		want []change.Value
	}{
		{`(1)`, []change.Value{T("1")}},
		{`()`, []change.Value{N}},
		{`(,)`, []change.Value{N, N}},
		{`("",)`, []change.Value{T(""), N}},
		{`(1,"a b","x""y","back\\slash")`, []change.Value{T("1"), T("a b"), T(`x"y`), T(`back\slash`)}},
		{`("{1,2}","(3,4)",NaN)`, []change.Value{T("{1,2}"), T("(3,4)"), T("NaN")}},
		{`(a\,b)`, []change.Value{T("a,b")}},
		{`("{""a"": 1}")`, []change.Value{T(`{"a": 1}`)}},
	}
	for _, c := range cases {
		got, err := parseRecord(c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %v want %v", c.in, got, c.want)
		}
	}
	for _, bad := range []string{``, `(`, `1,2`, `("x)`, `(x\)`} {
		if _, err := parseRecord(bad); err == nil {
			t.Errorf("%q: want error", bad)
		}
	}
}

func FuzzParseRecord(f *testing.F) {
	f.Add(`(1,"a b",,"")`)
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = parseRecord(s) // must not panic
	})
}
