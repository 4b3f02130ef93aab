package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Kind is the syntax of a key's value.
type Kind int

const (
	KindString   Kind = iota // text, trimmed
	KindList                 // comma-separated text, or a list in YAML/TOML
	KindBool                 // true or false
	KindInt                  // whole number
	KindDuration             // Go duration with a unit: 500ms, 5s, 1m30s
	KindSize                 // see ParseSize
)

// Key is one configuration key: its dotted name, its syntax and the field
// of Config it fills. The table of keys is the contract of docs/DESIGN.md plus
// the tuning keys schedsync adds.
type Key struct {
	Name string
	Kind Kind
	ptr  func(*Config) any
}

var keys = []Key{
	{"node.role", KindString, func(c *Config) any { return &c.Node.Role }},
	{"node.name", KindString, func(c *Config) any { return &c.Node.Name }},
	{"repository.url", KindString, func(c *Config) any { return &c.Repository.URL }},
	{"repository.schemas", KindList, func(c *Config) any { return &c.Repository.Schemas }},
	{"repository.tables", KindList, func(c *Config) any { return &c.Repository.Tables }},
	{"capture.mode", KindString, func(c *Config) any { return &c.Capture.Mode }},
	{"capture.allow_no_pk", KindBool, func(c *Config) any { return &c.Capture.AllowNoPK }},
	{"capture.poll_interval", KindDuration, func(c *Config) any { return &c.Capture.PollInterval }},
	{"capture.batch_size", KindInt, func(c *Config) any { return &c.Capture.BatchSize }},
	{"sync.listen", KindString, func(c *Config) any { return &c.Sync.Listen }},
	{"sync.token", KindString, func(c *Config) any { return &c.Sync.Token }},
	{"sync.token_file", KindString, func(c *Config) any { return &c.Sync.TokenFile }},
	{"sync.heartbeat", KindDuration, func(c *Config) any { return &c.Sync.Heartbeat }},
	{"master.host", KindString, func(c *Config) any { return &c.Master.Host }},
	{"master.port", KindInt, func(c *Config) any { return &c.Master.Port }},
	{"tls.cert", KindString, func(c *Config) any { return &c.TLS.Cert }},
	{"tls.key", KindString, func(c *Config) any { return &c.TLS.Key }},
	{"tls.ca", KindString, func(c *Config) any { return &c.TLS.CA }},
	{"http.listen", KindString, func(c *Config) any { return &c.HTTP.Listen }},
	{"http.token", KindString, func(c *Config) any { return &c.HTTP.Token }},
	{"http.token_file", KindString, func(c *Config) any { return &c.HTTP.TokenFile }},
	{"spool.dir", KindString, func(c *Config) any { return &c.Spool.Dir }},
	{"spool.max_backlog", KindSize, func(c *Config) any { return &c.Spool.MaxBacklog }},
	{"spool.backup_pin", KindDuration, func(c *Config) any { return &c.Spool.BackupPin }},
	{"spool.segment_size", KindSize, func(c *Config) any { return &c.Spool.SegmentSize }},
	{"spool.compression_level", KindString, func(c *Config) any { return &c.Spool.CompressionLevel }},
	{"log.file", KindString, func(c *Config) any { return &c.Log.File }},
	{"log.level", KindString, func(c *Config) any { return &c.Log.Level }},
	{"log.format", KindString, func(c *Config) any { return &c.Log.Format }},
	{"resync.auto", KindBool, func(c *Config) any { return &c.Resync.Auto }},
	{"failover.promote_command", KindString, func(c *Config) any { return &c.Failover.PromoteCommand }},
	{"failover.demote_command", KindString, func(c *Config) any { return &c.Failover.DemoteCommand }},
	{"failover.peers", KindList, func(c *Config) any { return &c.Failover.Peers }},
	{"failover.auto", KindBool, func(c *Config) any { return &c.Failover.Auto }},
	{"failover.timeout", KindDuration, func(c *Config) any { return &c.Failover.Timeout }},
	{"failover.witness", KindString, func(c *Config) any { return &c.Failover.Witness }},
	{"failover.probe_url", KindString, func(c *Config) any { return &c.Failover.ProbeURL }},
	{"failover.max_lag", KindSize, func(c *Config) any { return &c.Failover.MaxLag }},
	{"failover.synchronous", KindBool, func(c *Config) any { return &c.Failover.Synchronous }},
	{"failover.synchronous_slaves", KindInt, func(c *Config) any { return &c.Failover.SynchronousSlaves }},
	{"failover.synchronous_strict", KindBool, func(c *Config) any { return &c.Failover.SynchronousStrict }},
	{"failover.synchronous_timeout", KindDuration, func(c *Config) any { return &c.Failover.SynchronousTimeout }},
	{"apply.batch_max_bytes", KindSize, func(c *Config) any { return &c.Apply.BatchMaxBytes }},
	{"apply.batch_max_delay", KindDuration, func(c *Config) any { return &c.Apply.BatchMaxDelay }},
	{"ddl.replicate", KindBool, func(c *Config) any { return &c.DDL.Replicate }},
}

// Keys returns every configuration key, in the order of the example files.
func Keys() []Key {
	return append([]Key(nil), keys...)
}

// LookupKey finds a key by its dotted name (lower case, as viper reports it).
func LookupKey(name string) (Key, bool) {
	for _, k := range keys {
		if k.Name == name {
			return k, true
		}
	}
	return Key{}, false
}

// Syntax says what a value of this kind looks like, for error messages.
func (k Key) Syntax() string {
	switch k.Kind {
	case KindList:
		return "use a comma-separated list"
	case KindBool:
		return "use true or false"
	case KindInt:
		return "use a whole number"
	case KindDuration:
		return "use a duration with a unit, such as 500ms, 5s or 1m30s"
	case KindSize:
		return SizeSyntax
	}
	return "use text"
}

// Set parses v into the key's field of c. v is what a decoder produced:
// text (from .properties files and the environment), or a bool, number or
// list (from YAML and TOML). Parsing is strict: anything that is not clearly
// a value of the key's kind is a *KeyError, never a silent zero.
func (k Key) Set(c *Config, v any) error {
	bad := func(shown string) error {
		return &KeyError{Key: k.Name, Value: k.redact(shown), Allowed: k.Syntax()}
	}
	if k.Kind == KindList {
		list, ok := toList(v)
		if !ok {
			return bad(fmt.Sprint(v))
		}
		*k.ptr(c).(*[]string) = list
		return nil
	}
	s, ok := scalarText(v)
	if !ok {
		return bad(fmt.Sprint(v))
	}
	switch p := k.ptr(c).(type) {
	case *string:
		*p = s
	case *Role:
		*p = Role(s)
	case *CaptureMode:
		*p = CaptureMode(s)
	case *bool:
		b, ok := parseBool(v, s)
		if !ok {
			return bad(s)
		}
		*p = b
	case *int:
		n, ok := parseInt(v, s)
		if !ok {
			return bad(s)
		}
		*p = n
	case *time.Duration:
		if _, isText := v.(string); !isText {
			return bad(s) // a bare YAML/TOML number has no unit
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return bad(s)
		}
		*p = d
	case *Size:
		n, err := parseSizeValue(v, s)
		if err != nil {
			return bad(s)
		}
		*p = n
	default:
		panic(fmt.Sprintf("config: key %s has an unhandled field type %T", k.Name, p))
	}
	return nil
}

// redact masks a value of a secret key for an error message.
func (k Key) redact(s string) string {
	switch k.Name {
	case "sync.token", "http.token":
		return Mask
	case "repository.url":
		return RedactURL(s)
	}
	return s
}

// Text is the key's value in c written as in a .properties file, so that
// Set(Text()) gives the value back. It does not redact: format a Redacted
// config for people.
func (k Key) Text(c *Config) string {
	switch p := k.ptr(c).(type) {
	case *string:
		return *p
	case *Role:
		return string(*p)
	case *CaptureMode:
		return string(*p)
	case *[]string:
		return strings.Join(*p, ",")
	case *bool:
		return strconv.FormatBool(*p)
	case *int:
		return strconv.Itoa(*p)
	case *time.Duration:
		return p.String()
	case *Size:
		return p.String()
	}
	panic(fmt.Sprintf("config: key %s has an unhandled field type", k.Name))
}

// scalarText turns a decoded scalar into trimmed text. Numbers and bools are
// accepted for text keys because YAML and TOML users write `node.name: 2`
// or `master.host = 10.0.0.1` without thinking of quotes.
func scalarText(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return strings.TrimSpace(x), true
	case bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return fmt.Sprint(x), true
	case float32, float64:
		return strconv.FormatFloat(toFloat(x), 'f', -1, 64), true
	}
	return "", false
}

func toFloat(v any) float64 {
	if f, ok := v.(float32); ok {
		return float64(f)
	}
	return v.(float64)
}

// toList accepts "a, b,c" or a decoded list of scalars; empty items are
// dropped so that a trailing comma or an empty value means "none".
func toList(v any) ([]string, bool) {
	var items []string
	switch x := v.(type) {
	case string:
		items = strings.Split(x, ",")
	case []string:
		items = x
	case []any:
		for _, e := range x {
			s, ok := scalarText(e)
			if !ok {
				return nil, false
			}
			items = append(items, s)
		}
	default:
		return nil, false
	}
	out := []string{}
	for _, s := range items {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out, true
}

// parseBool accepts a decoded bool or exactly true/false in any case; yes,
// 1 and on are refused because a typo must not pass as a setting.
func parseBool(v any, s string) (bool, bool) {
	if b, ok := v.(bool); ok {
		return b, true
	}
	if _, ok := v.(string); !ok {
		return false, false
	}
	switch strings.ToLower(s) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

func parseInt(v any, s string) (int, bool) {
	switch x := v.(type) {
	case float32, float64:
		f := toFloat(x)
		if f != math.Trunc(f) || math.Abs(f) > math.MaxInt32 {
			return 0, false
		}
		return int(f), true
	case bool:
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// parseSizeValue reads text with ParseSize, and a bare YAML/TOML integer as
// bytes, like ParseSize reads "1048576".
func parseSizeValue(v any, s string) (Size, error) {
	switch v.(type) {
	case string, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return ParseSize(s)
	}
	return 0, fmt.Errorf("invalid size %q", s)
}
