package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Bounds that Validate enforces. They are wide on purpose: each one only
// refuses a value that cannot work or would defeat the design (busy loops,
// unbounded memory, a peer declared dead between two heartbeats).
const (
	MinPollInterval  = 10 * time.Millisecond
	MaxBatchSize     = 1_000_000
	MinHeartbeat     = 100 * time.Millisecond
	MinSegmentSize   = 4 * KiB
	MaxSegmentSize   = 1 * GiB
	MaxBatchMaxDelay = time.Minute
	maxNodeNameLen   = 64
)

// Validate checks every key and returns all problems at once, joined, each
// a *KeyError (see KeyErrors). It looks at values only: reading
// sync.token_file and checking that the TLS files exist is the loader's job,
// because Validate must give the same answer on any host.
func (c *Config) Validate() error {
	v := &validator{}
	v.node(c)
	v.repository(c)
	v.capture(c)
	v.sync(c)
	v.master(c)
	v.tls(c)
	v.http(c)
	v.spool(c)
	v.log(c)
	v.failover(c)
	v.apply(c)
	return errors.Join(v.errs...)
}

type validator struct{ errs []error }

// bad records a value that is not allowed.
func (v *validator) bad(key, value, allowed string) {
	v.errs = append(v.errs, &KeyError{Key: key, Value: value, Allowed: allowed})
}

// problem records a key whose trouble is not its value (missing, conflict).
func (v *validator) problem(key, value, reason, allowed string) {
	v.errs = append(v.errs, &KeyError{Key: key, Value: value, Reason: reason, Allowed: allowed})
}

func (v *validator) oneOf(key, value string, allowed ...string) {
	if value == "" {
		v.problem(key, value, "is required", "use "+orList(allowed))
	} else if !slices.Contains(allowed, value) {
		v.bad(key, value, "use "+orList(allowed))
	}
}

func (v *validator) node(c *Config) {
	v.oneOf("node.role", string(c.Node.Role), string(RoleMaster), string(RoleSlave))
	name := c.Node.Name
	switch {
	case name == "" && c.Node.Role == RoleSlave:
		v.problem("node.name", "", "required on a slave",
			"set a name unique among the slaves of this master, such as node02")
	case name == "" && c.Node.Role == RoleMaster:
		v.problem("node.name", "", "is required",
			"set a name for this node (it defaults to the host name, which could not be read)")
	case name != "" && !validNodeName(name):
		v.bad("node.name", name, fmt.Sprintf(
			"use letters, digits, '.', '_' and '-', at most %d characters", maxNodeNameLen))
	}
}

// validNodeName keeps names safe to print in messages and to use in file
// names in the spool directory.
func validNodeName(s string) bool {
	if len(s) > maxNodeNameLen || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			r == '.' || r == '_' || r == '-'
		if !ok {
			return false
		}
	}
	return true
}

func (v *validator) repository(c *Config) {
	const urlHelp = "use a libpq URL (postgres://user@host:5432/dbname) or key=value string (host=... dbname=...)"
	u := c.Repository.URL
	switch {
	case u == "":
		v.problem("repository.url", "", "is required", urlHelp)
	case strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://"):
		if _, err := url.Parse(u); err != nil {
			v.problem("repository.url", RedactURL(u), fmt.Sprintf("%q is not a valid URL", RedactURL(u)), urlHelp)
		}
	case !strings.Contains(u, "="):
		v.bad("repository.url", RedactURL(u), urlHelp)
	}

	if len(c.Repository.Schemas) == 0 {
		v.problem("repository.schemas", "", "is required", "list at least one schema, such as public")
	}
	for i, s := range c.Repository.Schemas {
		if slices.Contains(c.Repository.Schemas[:i], s) {
			v.problem("repository.schemas", s, fmt.Sprintf("lists %q twice", s), "list each schema once")
		}
	}
	for _, p := range c.Repository.Tables {
		if _, err := path.Match(p, ""); err != nil {
			v.bad("repository.tables", p, "use table names or glob patterns with *, ? and [...], such as qrtz_*")
		}
	}
}

func (v *validator) capture(c *Config) {
	v.oneOf("capture.mode", string(c.Capture.Mode), string(CaptureTrigger), string(CaptureLogical))
	if d := c.Capture.PollInterval; d < MinPollInterval {
		v.bad("capture.poll_interval", d.String(), "use at least "+MinPollInterval.String())
	}
	if n := c.Capture.BatchSize; n < 1 || n > MaxBatchSize {
		v.bad("capture.batch_size", strconv.Itoa(n), fmt.Sprintf("use 1 to %d", MaxBatchSize))
	}
}

func (v *validator) sync(c *Config) {
	if err := checkHostPort(c.Sync.Listen); err != "" {
		v.bad("sync.listen", c.Sync.Listen, err)
	}
	if c.Sync.Token == "" && c.Sync.TokenFile == "" {
		v.problem("sync.token", "", "is required (or sync.token_file)",
			"set the secret shared by the master and its slaves, or sync.token_file naming a file that holds it")
	}
	v.absPath("sync.token_file", c.Sync.TokenFile)
	if d := c.Sync.Heartbeat; d < MinHeartbeat {
		v.bad("sync.heartbeat", d.String(), "use at least "+MinHeartbeat.String())
	}
}

// checkHostPort returns what to do instead, or "" if s is a usable
// listen address.
func checkHostPort(s string) string {
	const help = "use host:port, such as 0.0.0.0:7700, [::]:7700 or :7700"
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return help
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return help + ", with a port from 1 to 65535"
	}
	return ""
}

func (v *validator) master(c *Config) {
	if c.Node.Role == RoleSlave && c.Master.Host == "" {
		v.problem("master.host", "", "required on a slave",
			"set the host name or address of the master's sync service")
	}
	if strings.ContainsAny(c.Master.Host, " /:") && net.ParseIP(c.Master.Host) == nil {
		v.bad("master.host", c.Master.Host, "use a host name or IP address, without a port (the port is master.port)")
	}
	if p := c.Master.Port; p < 1 || p > 65535 {
		v.bad("master.port", strconv.Itoa(p), "use 1 to 65535")
	}
}

func (v *validator) tls(c *Config) {
	t := c.TLS
	if (t.Cert == "") != (t.Key == "") {
		key, missing := "tls.key", "tls.cert"
		if t.Key != "" {
			key, missing = "tls.cert", "tls.key"
		}
		v.problem(key, "", "is required when "+missing+" is set", "set both tls.cert and tls.key, or neither")
	}
	if c.Node.Role == RoleMaster && t.CA != "" && t.Cert == "" {
		v.problem("tls.cert", "", "is required on a master when tls.ca is set",
			"set tls.cert and tls.key so the master can serve TLS, or remove tls.ca")
	}
	v.absPath("tls.cert", t.Cert)
	v.absPath("tls.key", t.Key)
	v.absPath("tls.ca", t.CA)
}

func (v *validator) http(c *Config) {
	v.absPath("http.token_file", c.HTTP.TokenFile)
	if c.HTTP.Listen == "" {
		return
	}
	if err := checkHostPort(c.HTTP.Listen); err != "" {
		v.bad("http.listen", c.HTTP.Listen, strings.ReplaceAll(err, "7700", "7780"))
		return
	}
	if c.HTTP.Token == "" && c.HTTP.TokenFile == "" && !IsLoopback(c.HTTP.Listen) {
		v.problem("http.listen", c.HTTP.Listen, strconv.Quote(c.HTTP.Listen)+" is not a loopback address and http.token is not set",
			"set http.token (or http.token_file) to the bearer token that Prometheus and browsers must send, or listen on 127.0.0.1")
	}
}

// IsLoopback reports whether the host of the listen address hostPort is
// a loopback address (127.0.0.0/8, ::1 or localhost); an empty host
// (all interfaces) is not.
func IsLoopback(hostPort string) bool {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil || host == "" {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (v *validator) spool(c *Config) {
	s := c.Spool
	if s.Dir == "" {
		v.problem("spool.dir", "", "is required", "set a directory such as "+DefaultSpoolDir)
	}
	v.absPath("spool.dir", s.Dir)
	if s.MaxBacklog <= 0 {
		v.bad("spool.max_backlog", s.MaxBacklog.String(), "use a size above 0, such as 1GiB")
	}
	if s.BackupPin < 0 {
		v.bad("spool.backup_pin", s.BackupPin.String(), "use a duration of 0 or more, such as 1h")
	}
	if s.SegmentSize < MinSegmentSize || s.SegmentSize > MaxSegmentSize {
		v.bad("spool.segment_size", s.SegmentSize.String(),
			fmt.Sprintf("use %s to %s, such as 64MiB", MinSegmentSize, MaxSegmentSize))
	}
	v.oneOf("spool.compression_level", s.CompressionLevel, "fastest", "default", "better", "best")
}

func (v *validator) log(c *Config) {
	v.absPath("log.file", c.Log.File)
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "text", "json")
}

// failoverHeartbeats: failover.timeout must span this many heartbeats, or
// a slave would take one late heartbeat for a dead master (Patroni checks
// its loop_wait and retry_timeout against ttl the same way).
const failoverHeartbeats = 3

func (v *validator) failover(c *Config) {
	f := c.Failover
	for _, p := range f.Peers {
		if _, port, err := net.SplitHostPort(p); err != nil || port == "" {
			v.bad("failover.peers", p, "list the other nodes' sync ports as host:port, such as 10.0.0.2:7700")
		}
	}
	if f.MaxLag < 0 {
		v.bad("failover.max_lag", f.MaxLag.String(), "use a size of 0 or more, such as 1MiB")
	}
	if min := failoverHeartbeats * c.Sync.Heartbeat; f.Timeout < min {
		v.bad("failover.timeout", f.Timeout.String(), fmt.Sprintf(
			"use at least %d × sync.heartbeat (%s): a master is declared dead only after it missed several heartbeats",
			failoverHeartbeats, min))
	}
	if f.Synchronous && c.Capture.Mode == CaptureTrigger {
		v.problem("failover.synchronous", "true", "needs capture.mode = logical",
			"trigger capture reads committed rows and cannot hold a commit until a slave has it; use capture.mode = logical, or set failover.synchronous = false")
	}
	if f.SynchronousSlaves < 1 {
		v.bad("failover.synchronous_slaves", strconv.Itoa(f.SynchronousSlaves), "use 1 or more: how many slaves must hold a commit durably before it returns")
	}
	if f.SynchronousTimeout <= 0 {
		v.bad("failover.synchronous_timeout", f.SynchronousTimeout.String(), "use a duration above 0, such as 10s (or failover.synchronous_strict = true to wait for ever)")
	}
	if f.Auto && f.Witness == "" {
		v.problem("failover.witness", "", "is required when failover.auto = true",
			"name a third party the slave must reach before it promotes itself (a libpq URL of another PostgreSQL server, or host:port), "+
				"so that a slave cut off from the network never promotes itself while the master still runs; or set failover.auto = false")
	}
}

func (v *validator) apply(c *Config) {
	if n := c.Apply.BatchMaxBytes; n <= 0 {
		v.bad("apply.batch_max_bytes", n.String(), "use a size above 0, such as 8MiB")
	}
	if d := c.Apply.BatchMaxDelay; d < 0 || d > MaxBatchMaxDelay {
		v.bad("apply.batch_max_delay", d.String(),
			"use 0 to "+MaxBatchMaxDelay.String()+" (every change waits up to this long on the slave)")
	}
}

// absPath refuses relative paths: the detached service does not run in the
// directory the operator started it from.
func (v *validator) absPath(key, p string) {
	if p != "" && !filepath.IsAbs(p) {
		v.bad(key, p, "use an absolute path")
	}
}

// orList writes "a, b or c".
func orList(items []string) string {
	if len(items) < 2 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}
