package config

import (
	"strings"
	"testing"
	"time"
)

func validMaster() Config {
	c := DefaultConfig()
	c.Node.Role = RoleMaster
	c.Node.Name = "node01"
	c.Repository.URL = "postgres://sched@127.0.0.1:5432/scheduler"
	c.Sync.Token = "s3cret-s3cret-s3cret"
	return c
}

func validSlave() Config {
	c := validMaster()
	c.Node.Role = RoleSlave
	c.Node.Name = "node02"
	c.Master.Host = "10.0.0.1"
	return c
}

func TestValidateAcceptsGoodConfigs(t *testing.T) {
	tests := map[string]func() Config{
		"master": validMaster,
		"slave":  validSlave,
		"key=value url": func() Config {
			c := validMaster()
			c.Repository.URL = "host=/tmp port=5433 dbname=scheduler user=sched"
			return c
		},
		"token file instead of token": func() Config {
			c := validMaster()
			c.Sync.Token, c.Sync.TokenFile = "", "/etc/schedsync/token"
			return c
		},
		"tls everything": func() Config {
			c := validMaster()
			c.TLS = TLSConfig{Cert: "/etc/schedsync/tls.crt", Key: "/etc/schedsync/tls.key", CA: "/etc/schedsync/ca.crt"}
			return c
		},
		"slave with ca only": func() Config {
			c := validSlave()
			c.TLS.CA = "/etc/schedsync/ca.crt"
			return c
		},
		"logical, patterns, ipv6 listen, zero delay": func() Config {
			c := validMaster()
			c.Capture.Mode = CaptureLogical
			c.Repository.Tables = []string{"qrtz_*", "river_job", "job_[ab]?"}
			c.Sync.Listen = "[::]:7700"
			c.Apply.BatchMaxDelay = 0
			return c
		},
		"listen on all interfaces shorthand": func() Config {
			c := validMaster()
			c.Sync.Listen = ":7700"
			return c
		},
		"ipv6 master host": func() Config {
			c := validSlave()
			c.Master.Host = "fd00::1"
			return c
		},
		"http on loopback without token": func() Config {
			c := validMaster()
			c.HTTP.Listen = "127.0.0.1:7780"
			return c
		},
		"http on localhost ipv6 without token": func() Config {
			c := validSlave()
			c.HTTP.Listen = "[::1]:7780"
			return c
		},
		"http on all interfaces with a token file": func() Config {
			c := validMaster()
			c.HTTP.Listen, c.HTTP.TokenFile = ":7780", "/etc/schedsync/http-token"
			return c
		},
	}
	for name, mk := range tests {
		c := mk()
		if err := c.Validate(); err != nil {
			t.Errorf("%s: Validate() = %v, want nil", name, err)
		}
	}
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name   string
		base   func() Config
		change func(*Config)
		key    string
		msg    string // exact message of the (only) KeyError
	}{
		{"http on all interfaces without token", validMaster, func(c *Config) { c.HTTP.Listen = "0.0.0.0:7780" }, "http.listen",
			`http.listen: "0.0.0.0:7780" is not a loopback address and http.token is not set; set http.token (or http.token_file) to the bearer token that Prometheus and browsers must send, or listen on 127.0.0.1`},
		{"http listen without port", validMaster, func(c *Config) { c.HTTP.Listen = "127.0.0.1" }, "http.listen", ""},
		{"role typo", validMaster, func(c *Config) { c.Node.Role = "mastr" }, "node.role",
			`node.role: "mastr" is not allowed; use master or slave`},
		{"role missing", validMaster, func(c *Config) { c.Node.Role = "" }, "node.role",
			`node.role: is required; use master or slave`},
		{"slave without name", validSlave, func(c *Config) { c.Node.Name = "" }, "node.name", ""},
		{"name with space", validSlave, func(c *Config) { c.Node.Name = "node 2" }, "node.name", ""},
		{"name too long", validSlave, func(c *Config) { c.Node.Name = strings.Repeat("n", 65) }, "node.name", ""},
		{"url missing", validMaster, func(c *Config) { c.Repository.URL = "" }, "repository.url", ""},
		{"url neither form", validMaster, func(c *Config) { c.Repository.URL = "localhost" }, "repository.url",
			`repository.url: "localhost" is not allowed; use a libpq URL (postgres://user@host:5432/dbname) or key=value string (host=... dbname=...)`},
		{"no schemas", validMaster, func(c *Config) { c.Repository.Schemas = nil }, "repository.schemas", ""},
		{"schema twice", validMaster, func(c *Config) { c.Repository.Schemas = []string{"public", "public"} }, "repository.schemas", ""},
		{"bad pattern", validMaster, func(c *Config) { c.Repository.Tables = []string{"qrtz_[x"} }, "repository.tables", ""},
		{"auto failover without witness", validSlave, func(c *Config) { c.Failover.Auto = true }, "failover.witness", ""},
		{"synchronous with trigger capture", validMaster, func(c *Config) { c.Capture.Mode = CaptureTrigger; c.Failover.Synchronous = true }, "failover.synchronous",
			`failover.synchronous: needs capture.mode = logical; trigger capture reads committed rows and cannot hold a commit until a slave has it; use capture.mode = logical, or set failover.synchronous = false`},
		{"no synchronous slaves", validMaster, func(c *Config) { c.Failover.SynchronousSlaves = 0 }, "failover.synchronous_slaves", ""},
		{"synchronous timeout zero", validMaster, func(c *Config) { c.Failover.SynchronousTimeout = 0 }, "failover.synchronous_timeout", ""},
		{"failover timeout below three heartbeats", validSlave, func(c *Config) { c.Failover.Timeout = 10 * time.Second }, "failover.timeout",
			`failover.timeout: "10s" is not allowed; use at least 3 × sync.heartbeat (15s): a master is declared dead only after it missed several heartbeats`},
		{"peer without port", validMaster, func(c *Config) { c.Failover.Peers = []string{"10.0.0.2"} }, "failover.peers", ""},
		{"capture mode", validMaster, func(c *Config) { c.Capture.Mode = "wal" }, "capture.mode",
			`capture.mode: "wal" is not allowed; use trigger or logical`},
		{"poll too fast", validMaster, func(c *Config) { c.Capture.PollInterval = time.Millisecond }, "capture.poll_interval",
			`capture.poll_interval: "1ms" is not allowed; use at least 10ms`},
		{"batch zero", validMaster, func(c *Config) { c.Capture.BatchSize = 0 }, "capture.batch_size", ""},
		{"batch huge", validMaster, func(c *Config) { c.Capture.BatchSize = MaxBatchSize + 1 }, "capture.batch_size", ""},
		{"listen no port", validMaster, func(c *Config) { c.Sync.Listen = "0.0.0.0" }, "sync.listen", ""},
		{"listen port 0", validMaster, func(c *Config) { c.Sync.Listen = "0.0.0.0:0" }, "sync.listen", ""},
		{"listen port name", validMaster, func(c *Config) { c.Sync.Listen = "0.0.0.0:http" }, "sync.listen", ""},
		{"no token", validMaster, func(c *Config) { c.Sync.Token = "" }, "sync.token", ""},
		{"relative token file", validMaster, func(c *Config) { c.Sync.Token, c.Sync.TokenFile = "", "token" }, "sync.token_file", ""},
		{"heartbeat too short", validMaster, func(c *Config) { c.Sync.Heartbeat = 50 * time.Millisecond }, "sync.heartbeat",
			`sync.heartbeat: "50ms" is not allowed; use at least 100ms`},
		{"slave without master", validSlave, func(c *Config) { c.Master.Host = "" }, "master.host",
			`master.host: required on a slave; set the host name or address of the master's sync service`},
		{"master host with port", validSlave, func(c *Config) { c.Master.Host = "10.0.0.1:7700" }, "master.host", ""},
		{"port zero", validSlave, func(c *Config) { c.Master.Port = 0 }, "master.port", `master.port: "0" is not allowed; use 1 to 65535`},
		{"port too big", validSlave, func(c *Config) { c.Master.Port = 65536 }, "master.port", ""},
		{"cert without key", validMaster, func(c *Config) { c.TLS.Cert = "/a.crt" }, "tls.key",
			`tls.key: is required when tls.cert is set; set both tls.cert and tls.key, or neither`},
		{"key without cert", validMaster, func(c *Config) { c.TLS.Key = "/a.key" }, "tls.cert", ""},
		{"ca alone on master", validMaster, func(c *Config) { c.TLS.CA = "/ca.crt" }, "tls.cert", ""},
		{"relative ca", validSlave, func(c *Config) { c.TLS.CA = "ca.crt" }, "tls.ca", ""},
		{"no spool dir", validMaster, func(c *Config) { c.Spool.Dir = "" }, "spool.dir", ""},
		{"relative spool dir", validMaster, func(c *Config) { c.Spool.Dir = "spool" }, "spool.dir",
			`spool.dir: "spool" is not allowed; use an absolute path`},
		{"zero backlog", validMaster, func(c *Config) { c.Spool.MaxBacklog = 0 }, "spool.max_backlog", ""},
		{"tiny segment", validMaster, func(c *Config) { c.Spool.SegmentSize = 100 }, "spool.segment_size", ""},
		{"huge segment", validMaster, func(c *Config) { c.Spool.SegmentSize = 2 * GiB }, "spool.segment_size", ""},
		{"compression", validMaster, func(c *Config) { c.Spool.CompressionLevel = "9" }, "spool.compression_level",
			`spool.compression_level: "9" is not allowed; use fastest, default, better or best`},
		{"relative log file", validMaster, func(c *Config) { c.Log.File = "sync.log" }, "log.file", ""},
		{"log level", validMaster, func(c *Config) { c.Log.Level = "warning" }, "log.level",
			`log.level: "warning" is not allowed; use debug, info, warn or error`},
		{"log format", validMaster, func(c *Config) { c.Log.Format = "xml" }, "log.format", ""},
		{"apply bytes", validMaster, func(c *Config) { c.Apply.BatchMaxBytes = 0 }, "apply.batch_max_bytes", ""},
		{"apply delay negative", validMaster, func(c *Config) { c.Apply.BatchMaxDelay = -time.Second }, "apply.batch_max_delay", ""},
		{"apply delay long", validMaster, func(c *Config) { c.Apply.BatchMaxDelay = time.Hour }, "apply.batch_max_delay", ""},
	}
	for _, tt := range tests {
		c := tt.base()
		tt.change(&c)
		errs := KeyErrors(c.Validate())
		if len(errs) != 1 {
			t.Errorf("%s: Validate() gave %d key errors %v, want 1 on %s", tt.name, len(errs), errs, tt.key)
			continue
		}
		if errs[0].Key != tt.key {
			t.Errorf("%s: error on key %s (%v), want %s", tt.name, errs[0].Key, errs[0], tt.key)
		}
		if !strings.HasPrefix(errs[0].Error(), tt.key+": ") {
			t.Errorf("%s: message %q does not start with the key", tt.name, errs[0])
		}
		if tt.msg != "" && errs[0].Error() != tt.msg {
			t.Errorf("%s: message\n got %s\nwant %s", tt.name, errs[0], tt.msg)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := DefaultConfig()
	c.Node.Role = RoleSlave
	c.Log.Level = "loud"
	errs := KeyErrors(c.Validate())
	var keys []string
	for _, e := range errs {
		keys = append(keys, e.Key)
	}
	want := []string{"node.name", "repository.url", "sync.token", "master.host", "log.level"}
	if strings.Join(keys, " ") != strings.Join(want, " ") {
		t.Errorf("keys with errors = %v, want %v", keys, want)
	}
}

func TestValidateNeverShowsURLPassword(t *testing.T) {
	c := validMaster()
	c.Repository.URL = "postgres://sched:hunter2@db:5432/x%zz"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() accepted a URL with a bad escape")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error leaks the password: %v", err)
	}
}

func TestFillHostDefaults(t *testing.T) {
	host := func() (string, error) { return "db-a", nil }
	c := validMaster()
	c.Node.Name = ""
	c.FillHostDefaults(host)
	if c.Node.Name != "db-a" {
		t.Errorf("master name = %q, want the host name", c.Node.Name)
	}
	s := validSlave()
	s.Node.Name = ""
	s.FillHostDefaults(host)
	if s.Node.Name != "" {
		t.Errorf("slave name = %q, want it left empty", s.Node.Name)
	}
}

func TestDefaultConfigIsValidOnceRequiredKeysAreSet(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err == nil {
		t.Fatal("the default config validated although node.role, repository.url and the token are unset")
	}
	for _, ke := range KeyErrors(c.Validate()) {
		switch ke.Key {
		case "node.role", "node.name", "repository.url", "sync.token":
		default:
			t.Errorf("default value rejected: %v", ke)
		}
	}
}
