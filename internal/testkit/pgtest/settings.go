package pgtest

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// defaultSettings are written before Options.Settings, which may override
// them. Durability against an OS crash is traded for speed, but not
// synchronous_commit: with it off, StopImmediate (a simulated crash) would
// lose transactions whose COMMIT had returned, which no real crash of a
// synchronous_commit=on server does, and crash tests would see phantom
// losses. With fsync=off a synchronous commit costs only a write().
var defaultSettings = map[string]string{
	"listen_addresses":        "127.0.0.1",
	"unix_socket_directories": "", // TCP only: no clash with a system cluster, no socket path length limit
	"wal_level":               "logical",
	"max_replication_slots":   "10",
	"max_wal_senders":         "10",
	"max_connections":         "100",
	"shared_buffers":          "64MB",
	"fsync":                   "off",
	"full_page_writes":        "off",
	"synchronous_commit":      "on",
	"logging_collector":       "off", // pg_ctl -l writes the log
	"log_line_prefix":         "%m [%p] %q%u@%d ",
}

// settingName and the one-line rule keep a caller's setting from smuggling
// other lines into postgresql.conf.
var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

func checkSettings(settings map[string]string) error {
	for k, v := range settings {
		switch {
		case !settingName.MatchString(k):
			return fmt.Errorf("pgtest: setting name %q is not a PostgreSQL parameter name", k)
		case strings.EqualFold(k, "port"):
			return fmt.Errorf("pgtest: set the port with Options.Port, not Settings")
		case strings.ContainsAny(v, "\n\r"):
			return fmt.Errorf("pgtest: setting %s: value must be on one line", k)
		}
	}
	return nil
}

// writeConf writes the settings to their own file, included at the end of
// postgresql.conf: they win over initdb's, and ALTER SYSTEM in a test still
// wins over them.
func (c *Cluster) writeConf() error {
	settings := maps.Clone(defaultSettings)
	maps.Copy(settings, c.opts.Settings)
	var b bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&b, "%s = %s\n", k, quoteSetting(settings[k]))
	}
	fmt.Fprintf(&b, "port = %d\n", c.Port)
	path := filepath.Join(c.DataDir, confFile)
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// quoteSetting quotes a value for postgresql.conf; a value that is already
// quoted is taken as it is.
func quoteSetting(v string) string {
	if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
		return v
	}
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}
