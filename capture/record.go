package capture

import (
	"fmt"
	"strings"

	"github.com/schedsync/schedsync/internal/change"
)

// parseRecord splits a PostgreSQL record literal, as printed by record_out
// (the text of OLD::text / NEW::text), into its field values.
//
// The grammar is record_in's: fields between "(" and ")" separated by ",";
// an empty unquoted field is NULL, a quoted one ("") is the empty string;
// inside quotes "" stands for " and a backslash escapes the next character,
// which it also does outside quotes.
func parseRecord(s string) ([]change.Value, error) {
	if len(s) < 2 || s[0] != '(' || s[len(s)-1] != ')' {
		return nil, fmt.Errorf("record literal %s is not enclosed in parentheses", abbrev(s))
	}
	body := s[1 : len(s)-1]
	var (
		vals   []change.Value
		buf    strings.Builder
		quoted bool // inside "..."
		sawQ   bool // the field had quotes: it is not NULL
	)
	flush := func() {
		if buf.Len() == 0 && !sawQ {
			vals = append(vals, change.Null)
		} else {
			vals = append(vals, change.Text(buf.String()))
		}
		buf.Reset()
		sawQ = false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '\\':
			if i+1 >= len(body) {
				return nil, fmt.Errorf("record literal %s ends in a lone backslash", abbrev(s))
			}
			i++
			buf.WriteByte(body[i])
		case c == '"' && quoted && i+1 < len(body) && body[i+1] == '"':
			i++
			buf.WriteByte('"')
		case c == '"':
			quoted = !quoted
			sawQ = true
		case c == ',' && !quoted:
			flush()
		default:
			buf.WriteByte(c)
		}
	}
	if quoted {
		return nil, fmt.Errorf("record literal %s has an unterminated quote", abbrev(s))
	}
	flush()
	return vals, nil
}

func abbrev(s string) string {
	if len(s) > 60 {
		return fmt.Sprintf("%q…", s[:60])
	}
	return fmt.Sprintf("%q", s)
}
