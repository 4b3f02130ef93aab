package capture

import (
	"context"
	"fmt"
	"strings"
	"unicode"

	"github.com/jackc/pgx/v5"
)

// ApplicationName is the application_name of capture's replication
// connection in logical mode: what synchronous_standby_names must name for
// failover.synchronous.
const ApplicationName = "schedsync_capture"

// NamesStandby reports whether a synchronous_standby_names value makes
// a walsender of application_name name a synchronous standby candidate:
// it is listed (case-insensitively; quoted names as written) or the list
// has *. Forms: "a, b", "FIRST n (a, b)", "ANY n (a, b)", "n (a, b)".
func NamesStandby(value, name string) bool {
	s := strings.TrimSpace(value)
	if s == "" {
		return false
	}
	if open := strings.IndexByte(s, '('); open >= 0 && strings.HasSuffix(s, ")") {
		head := strings.Fields(strings.ToUpper(s[:open]))
		if len(head) <= 2 && (len(head) == 0 || isCount(head[len(head)-1])) {
			s = s[open+1 : len(s)-1]
		}
	}
	for _, item := range splitNames(s) {
		if item == "*" {
			return true
		}
		if unq, ok := strings.CutPrefix(item, `"`); ok {
			if strings.TrimSuffix(unq, `"`) == name {
				return true
			}
			continue
		}
		if strings.EqualFold(item, name) {
			return true
		}
	}
	return false
}

func isCount(s string) bool {
	return s != "" && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsDigit(r) }) < 0
}

// splitNames splits a standby list at commas outside double quotes.
func splitNames(s string) []string {
	var out []string
	var b strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			b.WriteRune(r)
		case r == ',' && !quoted:
			out = append(out, strings.TrimSpace(b.String()))
			b.Reset()
		default:
			b.WriteRune(r)
		}
	}
	return append(out, strings.TrimSpace(b.String()))
}

// SynchronousCheck reads synchronous_standby_names on the master and says
// whether commits will wait for capture, and what to set if not.
func SynchronousCheck(ctx context.Context, conn *pgx.Conn) (advice string, err error) {
	var value string
	if err := conn.QueryRow(ctx, `SHOW synchronous_standby_names`).Scan(&value); err != nil {
		return "", fmt.Errorf("read synchronous_standby_names: %w", err)
	}
	if NamesStandby(value, ApplicationName) {
		return fmt.Sprintf("failover.synchronous: synchronous_standby_names = '%s' names capture (%s): a commit on the master returns once a slave holds it", value, ApplicationName), nil
	}
	set := ApplicationName
	if strings.TrimSpace(value) != "" {
		set = value + ", " + ApplicationName
	}
	return fmt.Sprintf("failover.synchronous: synchronous_standby_names = '%s' does not name capture (%s), so commits do not wait for slaves yet; "+
		"on the master run: ALTER SYSTEM SET synchronous_standby_names = '%s'; SELECT pg_reload_conf(); "+
		"(any time: before or after starting the services)", value, ApplicationName, set), nil
}
