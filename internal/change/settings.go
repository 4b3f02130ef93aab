package change

import (
	"fmt"
	"strings"
)

// Setting is a session setting that fixes how values are written as text
// or read back from it.
type Setting struct {
	Name  string
	Value string
	// List says the value is a list of names (search_path), written
	// unquoted in SQL: quoted, it would be one name.
	List bool
}

// TextSettings are pinned by every session that turns values into text or
// text into values: the capture triggers and the walsender (output),
// apply and restore (input), verify's checksums and backup's COPY. A
// client's DateStyle or extra_float_digits can then never change the text,
// and the slave's input functions recreate every value exactly: DateStyle
// 'SQL, DMY' would make dates ambiguous, extra_float_digits below 3 would
// round floats, a TimeZone other than UTC would shift timestamps without a
// zone. search_path makes regclass-like values print fully qualified.
// This list is their one home: SetSQL, FunctionSQL and RuntimeParams
// render it for each place.
var TextSettings = []Setting{
	{Name: "DateStyle", Value: "ISO, YMD"},
	{Name: "IntervalStyle", Value: "postgres"},
	{Name: "extra_float_digits", Value: "3"},
	{Name: "bytea_output", Value: "hex"},
	{Name: "TimeZone", Value: "UTC"},
	{Name: "standard_conforming_strings", Value: "on"},
	{Name: "search_path", Value: "pg_catalog, pg_temp", List: true},
}

func (s Setting) sqlValue() string {
	if s.List {
		return s.Value
	}
	return "'" + strings.ReplaceAll(s.Value, "'", "''") + "'"
}

// SetSQL renders TextSettings as SET statements for a session, or SET
// LOCAL statements for the current transaction when local is true.
func SetSQL(local bool) string {
	verb := "SET"
	if local {
		verb = "SET LOCAL"
	}
	var b strings.Builder
	for _, s := range TextSettings {
		fmt.Fprintf(&b, "%s %s = %s;\n", verb, s.Name, s.sqlValue())
	}
	return b.String()
}

// FunctionSQL renders TextSettings as the SET clauses of CREATE FUNCTION,
// one per line.
func FunctionSQL() string {
	var b strings.Builder
	for _, s := range TextSettings {
		fmt.Fprintf(&b, "SET %s = %s\n", s.Name, s.sqlValue())
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// RuntimeParams returns TextSettings as connection startup parameters (a
// replication connection runs no SET).
func RuntimeParams() map[string]string {
	m := make(map[string]string, len(TextSettings))
	for _, s := range TextSettings {
		m[s.Name] = s.Value
	}
	return m
}
