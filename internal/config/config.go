// Package config is schedsync's configuration as a plain typed struct: the
// contract keys of docs/DESIGN.md, their defaults (DefaultConfig is the only place
// a default lives), their text syntax (Keys, ParseSize) and their validation
// (Validate), with messages that name the key and say what is allowed.
//
// It never reads files or the environment and never imports viper: cmd/
// decodes sync.properties, YAML or TOML and SCHEDSYNC_* variables into a
// Config, and the stages receive the typed values. It must never put a
// secret (sync.token, a password in repository.url) into a string meant for
// people: use Redacted or String.
package config

import (
	"net"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Role is the part a node plays: it captures and serves changes (master) or
// receives and applies them (slave).
type Role string

const (
	RoleMaster Role = "master"
	RoleSlave  Role = "slave"
)

// CaptureMode is how the master turns committed changes into a stream.
type CaptureMode string

const (
	CaptureTrigger CaptureMode = "trigger"
	CaptureLogical CaptureMode = "logical"
)

// Config is the whole configuration of one node. The field comments give
// the key; Keys lists every key with its syntax.
type Config struct {
	Node       NodeConfig
	Repository RepositoryConfig
	Capture    CaptureConfig
	Sync       SyncConfig
	Master     MasterConfig
	TLS        TLSConfig
	HTTP       HTTPConfig
	Spool      SpoolConfig
	Log        LogConfig
	Resync     ResyncConfig
	Failover   FailoverConfig
	Apply      ApplyConfig
	DDL        DDLConfig
}

// DDLConfig governs schema change replication.
type DDLConfig struct {
	// Replicate (ddl.replicate): the master's event triggers record the
	// schema changes of the replicated schemas, and the slave runs them
	// at their place in the stream; false leaves the slave's schema to the
	// operator.
	Replicate bool
}

// NodeConfig says who this node is.
type NodeConfig struct {
	Role Role   // node.role
	Name string // node.name; unique among the slaves of a master
}

// RepositoryConfig is this node's scheduler repository database.
type RepositoryConfig struct {
	URL     string   // repository.url: libpq URL or key=value string
	Schemas []string // repository.schemas
	Tables  []string // repository.tables: glob patterns; empty means all tables
}

// CaptureConfig tunes change capture on the master.
type CaptureConfig struct {
	Mode      CaptureMode // capture.mode
	AllowNoPK bool        // capture.allow_no_pk: replicate tables without a primary key by full-row identity
	// PollInterval (capture.poll_interval) is how often the reader looks for
	// changes when no NOTIFY arrived: the fallback for a lost notification.
	PollInterval time.Duration
	BatchSize    int // capture.batch_size: most changes read in one batch
}

// SyncConfig is the sync service's own endpoint and shared secret.
type SyncConfig struct {
	Listen string // sync.listen: host:port; a slave needs it only once promoted
	// Token (sync.token) is the shared secret. When the secret comes from
	// TokenFile (sync.token_file), the loader reads it into Token, so users
	// of Config read Token only.
	Token     string
	TokenFile string
	Heartbeat time.Duration // sync.heartbeat
}

// MasterConfig is where a slave finds the master's sync service.
type MasterConfig struct {
	Host string // master.host
	Port int    // master.port
}

// Addr is the master's sync address in host:port form, ready to dial.
func (m MasterConfig) Addr() string {
	return net.JoinHostPort(m.Host, strconv.Itoa(m.Port))
}

// TLSConfig enables TLS on the sync port. Empty fields mean plain TCP.
type TLSConfig struct {
	Cert string // tls.cert: PEM certificate of this node
	Key  string // tls.key: PEM private key for Cert
	CA   string // tls.ca: PEM CA bundle that the peer's certificate must chain to
}

// HTTPConfig is the node's read-only HTTP endpoint: /metrics
// (Prometheus), /api/status and the status page. It serves TLS with
// tls.cert and tls.key when they are set.
type HTTPConfig struct {
	Listen string // http.listen: host:port; empty: no HTTP endpoint
	// Token (http.token) is the bearer token every request must carry;
	// required unless Listen is a loopback address. TokenFile
	// (http.token_file) names a file holding it; the loader reads it into
	// Token, so users of Config read Token only.
	Token     string
	TokenFile string
}

// SpoolConfig is the on-disk log of changes.
type SpoolConfig struct {
	Dir        string // spool.dir: segments, pid file, socket and state
	MaxBacklog Size   // spool.max_backlog: per-slave backlog before it must re-sync
	// BackupPin (spool.backup_pin) is how long the master keeps its spool
	// from a backup's position, so that a slave restored from that backup
	// is served however large the backlog that built up meanwhile; 0: not
	// at all.
	BackupPin        time.Duration
	SegmentSize      Size   // spool.segment_size
	CompressionLevel string // spool.compression_level: fastest, default, better or best (zstd)
}

// LogConfig is the service's log/slog output.
type LogConfig struct {
	File   string // log.file: empty means spool.dir/schedsync.log when detached, stderr in the foreground
	Level  string // log.level: debug, info, warn or error
	Format string // log.format: text or json
}

// ResyncConfig governs re-seeding a slave that fell too far behind.
type ResyncConfig struct {
	Auto bool // resync.auto: re-sync by itself when refused for its backlog
}

// FailoverConfig is how a node changes role: the shell hooks it runs, the
// peers it asks before serving as master, and automatic promotion.
type FailoverConfig struct {
	PromoteCommand string   // failover.promote_command
	DemoteCommand  string   // failover.demote_command
	Peers          []string // failover.peers: the other nodes' sync ports, host:port
	// Auto (failover.auto): a slave promotes itself once its master has
	// been unreachable for Timeout (failover.timeout), if it reaches
	// Witness (failover.witness) and, with ProbeURL (failover.probe_url)
	// set, the master's repository does not answer either; never with
	// more than MaxLag (failover.max_lag) of unapplied backlog.
	Auto     bool
	Timeout  time.Duration
	Witness  string
	ProbeURL string
	MaxLag   Size
	// Synchronous (failover.synchronous, logical mode): capture reports
	// the master's WAL flushed only once SynchronousSlaves slaves hold it
	// durably, so that with synchronous_standby_names naming capture a
	// commit returns only then. With no such slave for SynchronousTimeout
	// capture goes asynchronous (and back once a slave caught up), unless
	// SynchronousStrict, where commits wait.
	Synchronous        bool
	SynchronousSlaves  int
	SynchronousStrict  bool
	SynchronousTimeout time.Duration
}

// ApplyConfig tunes how the slave groups source transactions into one
// repository transaction.
type ApplyConfig struct {
	BatchMaxBytes Size          // apply.batch_max_bytes
	BatchMaxDelay time.Duration // apply.batch_max_delay: 0 commits every batch at once
}

// DefaultSpoolDir is where a packaged install keeps its spool.
const DefaultSpoolDir = "/var/lib/schedsync"

// DefaultConfig returns the configuration that an empty file means. Keys
// without a usable default (node.role, repository.url, the token, and on a
// slave node.name and master.host) are left empty so that Validate asks for
// them.
func DefaultConfig() Config {
	return Config{
		Repository: RepositoryConfig{Schemas: []string{"public"}},
		Capture: CaptureConfig{
			Mode:         CaptureTrigger,
			PollInterval: time.Second,
			BatchSize:    10000,
		},
		Sync: SyncConfig{
			Listen:    "0.0.0.0:7700",
			Heartbeat: 5 * time.Second,
		},
		Master: MasterConfig{Port: 7700},
		Spool: SpoolConfig{
			Dir:              DefaultSpoolDir,
			MaxBacklog:       1 * GiB,
			BackupPin:        time.Hour,
			SegmentSize:      64 * MiB,
			CompressionLevel: "fastest",
		},
		Log:      LogConfig{Level: "info", Format: "text"},
		Failover: FailoverConfig{Timeout: 30 * time.Second, MaxLag: 1 * MiB, SynchronousSlaves: 1, SynchronousTimeout: 10 * time.Second},
		Apply: ApplyConfig{
			BatchMaxBytes: 8 * MiB,
			BatchMaxDelay: 10 * time.Millisecond,
		},
		DDL: DDLConfig{Replicate: true},
	}
}

// FillHostDefaults sets the defaults that depend on the host rather than on
// the file: a master without node.name is named after its host name. A
// slave gets no such default because the master tracks each slave's backlog
// by name, and a host rename must not silently make it a new slave.
func (c *Config) FillHostDefaults(hostname func() (string, error)) {
	if c.Node.Role != RoleMaster || c.Node.Name != "" {
		return
	}
	if hostname == nil {
		hostname = os.Hostname
	}
	if h, err := hostname(); err == nil {
		c.Node.Name = h
	}
}

// LogFilePath is where a detached service writes its log.
func (c *Config) LogFilePath() string {
	if c.Log.File != "" {
		return c.Log.File
	}
	return filepath.Join(c.Spool.Dir, "schedsync.log")
}

// MatchTables reports whether table schema.name passes the
// repository.tables filter: glob patterns matched against the table name,
// or against schema.name when the pattern holds a dot; none matches all.
func MatchTables(patterns []string, schema, name string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		subject := name
		if strings.Contains(p, ".") {
			subject = schema + "." + name
		}
		if ok, _ := path.Match(p, subject); ok {
			return true
		}
	}
	return false
}
