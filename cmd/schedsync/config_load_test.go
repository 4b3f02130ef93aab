package main

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/schedsync/schedsync/internal/config"
)

// load runs the loader as a command would, with --config path.
func load(t *testing.T, path string) (*config.Config, error) {
	t.Helper()
	a := &app{configFlag: path}
	return a.loadConfig()
}

// configError runs `schedsync --config path status` and returns its
// stderr, failing the test unless it exited 2.
func configError(t *testing.T, path string) string {
	t.Helper()
	code, _, errOut := cli(t, "--config", path, "status")
	if code != exitUsage {
		t.Fatalf("exit %d, stderr %q; want 2", code, errOut)
	}
	return errOut
}

func TestMissingConfigSaysWhereItLooked(t *testing.T) {
	cleanEnv(t)
	errOut := configError(t, "/nonexistent/a.properties")
	want := "config file not found: tried /nonexistent/a.properties (from --config)"
	if !strings.Contains(errOut, want) {
		t.Errorf("stderr %q lacks %q", errOut, want)
	}

	t.Setenv(configPathEnv, "/nonexistent/b.properties")
	code, _, errOut := cli(t, "status")
	want = "tried /nonexistent/b.properties (from $SCHEDSYNC_CONFIG; --config not given)"
	if code != exitUsage || !strings.Contains(errOut, want) {
		t.Errorf("exit %d, stderr %q; want 2 and %q", code, errOut, want)
	}

	if _, err := os.Stat(defaultConfigPath); err == nil {
		t.Skipf("%s exists on this host", defaultConfigPath)
	}
	t.Setenv(configPathEnv, "")
	code, _, errOut = cli(t, "status")
	want = "tried " + defaultConfigPath + " (the default; --config not given, $SCHEDSYNC_CONFIG not set)"
	if code != exitUsage || !strings.Contains(errOut, want) {
		t.Errorf("exit %d, stderr %q; want 2 and %q", code, errOut, want)
	}
}

func TestConfigErrorsNameFileKeyAndFix(t *testing.T) {
	cleanEnv(t)
	tests := []struct {
		name, extra, want string
	}{
		{"unknown key", "spool.max_backlg=1GiB\n",
			`: unknown key "spool.max_backlg"; did you mean spool.max_backlog?`},
		{"key in wrong section", "sync.max_backlog=1GiB\n",
			`: unknown key "sync.max_backlog"; did you mean spool.max_backlog?`},
		{"unknown key far from all", "frobnicate=1\n",
			`: unknown key "frobnicate"; the keys are listed in the README`},
		{"bad size", "spool.max_backlog=1GX\n",
			`: spool.max_backlog: "1GX" is not allowed; use a size such as 64MiB`},
		{"bad role", "node.role=mastr\n",
			`: node.role: "mastr" is not allowed; use master or slave`},
		{"duration without unit", "sync.heartbeat=5\n",
			`: sync.heartbeat: "5" is not allowed; use a duration with a unit, such as 500ms, 5s or 1m30s`},
		{"bad bool", "resync.auto=yes\n",
			`: resync.auto: "yes" is not allowed; use true or false`},
		{"bad int", "master.port=77OO\n",
			`: master.port: "77OO" is not allowed; use a whole number`},
		{"out of range", "master.port=70000\n",
			`: master.port: "70000" is not allowed; use 1 to 65535`},
		{"slave without master", "node.role=slave\n",
			`: master.host: required on a slave; set the host name or address of the master's sync service`},
		{"relative spool", "spool.dir=spool\n",
			`: spool.dir: "spool" is not allowed; use an absolute path`},
		{"unreadable tls", "tls.ca=/nonexistent/ca.pem\nnode.role=slave\nmaster.host=db1\n",
			`: tls.ca: cannot read /nonexistent/ca.pem: no such file or directory`},
	}
	for _, tt := range tests {
		path := writeFile(t, "sync.properties", overlay(masterProps(t), tt.extra))
		errOut := configError(t, path)
		want := "schedsync status: config " + path + tt.want
		if !strings.Contains(errOut, want) {
			t.Errorf("%s: stderr\n%s\nlacks\n%s", tt.name, errOut, want)
		}
	}
}

func TestConfigReportsEveryMistakeAtOnce(t *testing.T) {
	cleanEnv(t)
	path := writeFile(t, "sync.properties", "node.role=slave\nlog.level=loud\n")
	errOut := configError(t, path)
	for _, key := range []string{"node.name", "repository.url", "sync.token", "master.host", "log.level"} {
		if !strings.Contains(errOut, "schedsync status: config "+path+": "+key+": ") {
			t.Errorf("stderr lacks a line for %s:\n%s", key, errOut)
		}
	}
}

func TestConfigErrorsNeverShowThePassword(t *testing.T) {
	cleanEnv(t)
	path := writeFile(t, "sync.properties", overlay(masterProps(t),
		"repository.url=postgres://sched:hunter2@db/x%zz\n"))
	if errOut := configError(t, path); strings.Contains(errOut, "hunter2") {
		t.Errorf("stderr leaks the password: %s", errOut)
	}
}

func TestUnsupportedExtension(t *testing.T) {
	cleanEnv(t)
	path := writeFile(t, "sync.conf", masterProps(t))
	if errOut := configError(t, path); !strings.Contains(errOut, `unsupported file type ".conf"; use .properties, .yaml, .yml or .toml`) {
		t.Errorf("stderr %q", errOut)
	}
}

func TestEnvOverridesFile(t *testing.T) {
	cleanEnv(t)
	path := writeFile(t, "sync.properties", overlay(masterProps(t), "spool.max_backlog=1GiB\n"))
	t.Setenv("SCHEDSYNC_SPOOL_MAX_BACKLOG", "2GiB")
	t.Setenv("SCHEDSYNC_REPOSITORY_SCHEMAS", "public, sched")
	t.Setenv("SCHEDSYNC_RESYNC_AUTO", "true") // not in the file at all
	cfg, err := load(t, path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Spool.MaxBacklog != 2*config.GiB || !cfg.Resync.Auto ||
		!reflect.DeepEqual(cfg.Repository.Schemas, []string{"public", "sched"}) {
		t.Errorf("env did not win: backlog %s, auto %v, schemas %v",
			cfg.Spool.MaxBacklog, cfg.Resync.Auto, cfg.Repository.Schemas)
	}

	t.Setenv("SCHEDSYNC_NODE_ROLE", "mastr")
	errOut := configError(t, path)
	want := "config " + path + `, env SCHEDSYNC_NODE_ROLE: node.role: "mastr" is not allowed`
	if !strings.Contains(errOut, want) {
		t.Errorf("stderr %q lacks %q", errOut, want)
	}
}

func TestTokenFile(t *testing.T) {
	cleanEnv(t)
	base := strings.Replace(masterProps(t), "sync.token=test-token-123\n", "", 1)
	tokenPath := writeFile(t, "token", "s3cret-from-file\n")
	path := writeFile(t, "sync.properties", base+"sync.token_file="+tokenPath+"\n")
	cfg, err := load(t, path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sync.Token != "s3cret-from-file" {
		t.Errorf("token = %q, want the file's content without the newline", cfg.Sync.Token)
	}

	missing := filepath.Join(t.TempDir(), "no-token")
	path = writeFile(t, "sync.properties", base+"sync.token_file="+missing+"\n")
	want := "config " + path + ": sync.token_file: cannot read " + missing + ": no such file or directory"
	if errOut := configError(t, path); !strings.Contains(errOut, want) {
		t.Errorf("stderr %q lacks %q", errOut, want)
	}

	empty := writeFile(t, "empty-token", "\n")
	path = writeFile(t, "sync.properties", base+"sync.token_file="+empty+"\n")
	if errOut := configError(t, path); !strings.Contains(errOut, "sync.token_file: file "+empty+" is empty") {
		t.Errorf("stderr %q does not say the token file is empty", errOut)
	}

	path = writeFile(t, "sync.properties", base+"sync.token=x\nsync.token_file="+tokenPath+"\n")
	if errOut := configError(t, path); !strings.Contains(errOut, "sync.token_file: is set together with sync.token; set only one of them") {
		t.Errorf("stderr %q does not refuse two tokens", errOut)
	}
}

func TestMasterNameDefaultsToHostName(t *testing.T) {
	cleanEnv(t)
	host, err := os.Hostname()
	if err != nil {
		t.Skip(err)
	}
	path := writeFile(t, "sync.properties", strings.Replace(masterProps(t), "node.name=node01\n", "", 1))
	cfg, err := load(t, path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Node.Name != host {
		t.Errorf("node.name = %q, want the host name %q", cfg.Node.Name, host)
	}
}

// The same non-default config in the three formats must load identically.
const sameProps = `node.role = slave
node.name = node02
repository.url = postgres://sched@10.0.0.2:5432/scheduler
repository.schemas = public, quartz
repository.tables = qrtz_*, job_runs
capture.mode = logical
capture.allow_no_pk = true
capture.poll_interval = 250ms
capture.batch_size = 500
sync.listen = 10.0.0.2:7701
sync.token = tok
sync.heartbeat = 2s
master.host = 10.0.0.1
master.port = 7701
spool.dir = /srv/schedsync
spool.max_backlog = 2GiB
spool.segment_size = 16MiB
spool.compression_level = better
log.level = debug
log.format = json
resync.auto = true
failover.promote_command = systemctl start quartz
apply.batch_max_bytes = 4MiB
apply.batch_max_delay = 0s
`

const sameYAML = `node: {role: slave, name: node02}
repository:
  url: postgres://sched@10.0.0.2:5432/scheduler
  schemas: [public, quartz]
  tables:
    - qrtz_*
    - job_runs
capture: {mode: logical, allow_no_pk: true, poll_interval: 250ms, batch_size: 500}
sync: {listen: "10.0.0.2:7701", token: tok, heartbeat: 2s}
master: {host: 10.0.0.1, port: 7701}
spool:
  dir: /srv/schedsync
  max_backlog: 2GiB
  segment_size: 16777216
  compression_level: better
log: {level: debug, format: json}
resync: {auto: true}
failover: {promote_command: systemctl start quartz}
apply: {batch_max_bytes: 4MiB, batch_max_delay: 0s}
`

const sameTOML = `[node]
role = "slave"
name = "node02"
[repository]
url = "postgres://sched@10.0.0.2:5432/scheduler"
schemas = ["public", "quartz"]
tables = "qrtz_*, job_runs"
[capture]
mode = "logical"
allow_no_pk = true
poll_interval = "250ms"
batch_size = 500
[sync]
listen = "10.0.0.2:7701"
token = "tok"
heartbeat = "2s"
[master]
host = "10.0.0.1"
port = 7701
[spool]
dir = "/srv/schedsync"
max_backlog = "2GiB"
segment_size = "16MiB"
compression_level = "better"
[log]
level = "debug"
format = "json"
[resync]
auto = true
[failover]
promote_command = "systemctl start quartz"
[apply]
batch_max_bytes = "4MiB"
batch_max_delay = "0s"
`

func TestFormatsLoadTheSameConfig(t *testing.T) {
	cleanEnv(t)
	var first *config.Config
	for _, f := range []struct{ name, content string }{
		{"sync.properties", sameProps}, {"sync.yaml", sameYAML}, {"sync.toml", sameTOML},
	} {
		cfg, err := load(t, writeFile(t, f.name, f.content))
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		if first == nil {
			first = cfg
			if cfg.Capture.PollInterval != 250*time.Millisecond || cfg.Spool.SegmentSize != 16*config.MiB ||
				cfg.Master.Port != 7701 || len(cfg.Repository.Tables) != 2 || !cfg.Capture.AllowNoPK {
				t.Fatalf("%s did not load as written:\n%s", f.name, cfg)
			}
			continue
		}
		if !reflect.DeepEqual(cfg, first) {
			t.Errorf("%s loads differently from sync.properties:\n%s\nvs\n%s", f.name, cfg, first)
		}
	}
}

func TestYAMLTypeAndNestingMistakes(t *testing.T) {
	cleanEnv(t)
	t.Setenv("SCHEDSYNC_SYNC_TOKEN", "tok")
	base := "repository: {url: 'host=db'}\n"
	tests := []struct{ yaml, want string }{
		{"node: {role: [master]}\n", `node.role: "[master]" is not allowed`},
		{"node: {role: master, nmae: x}\n", `unknown key "node.nmae"; did you mean node.name?`},
		{"node: {role: master}\nspool: {max_backlog: 1.5}\n", `spool.max_backlog: "1.5" is not allowed`},
		{"node: {role: master}\nsync: {heartbeat: 5}\n", `sync.heartbeat: "5" is not allowed`},
	}
	for _, tt := range tests {
		path := writeFile(t, "sync.yaml", tt.yaml+base)
		if errOut := configError(t, path); !strings.Contains(errOut, tt.want) {
			t.Errorf("%q: stderr %q lacks %q", tt.yaml, errOut, tt.want)
		}
	}
}

func TestPropertiesExpansionIsExplained(t *testing.T) {
	cleanEnv(t)
	path := writeFile(t, "sync.properties", overlay(masterProps(t), "sync.token=ab${cd\n"))
	errOut := configError(t, path)
	if !strings.Contains(errOut, "cannot parse as properties: a ${ without its closing }") ||
		strings.Contains(errOut, "ab${cd") {
		t.Errorf("stderr %q", errOut)
	}
}

func TestSuggestKeys(t *testing.T) {
	tests := map[string]string{
		"spool.max_backlg":    "spool.max_backlog",
		"sync.max_backlog":    "spool.max_backlog",
		"node.rol":            "node.role",
		"capture.allow-no-pk": "capture.allow_no_pk",
		"master.hots":         "master.host",
	}
	for in, want := range tests {
		if got := suggestKeys(in); len(got) == 0 || got[0] != want {
			t.Errorf("suggestKeys(%q) = %v, want %s first", in, got, want)
		}
	}
	if got := suggestKeys("jobstore.password"); len(got) != 0 {
		t.Errorf("suggestKeys(jobstore.password) = %v, want none", got)
	}
}

// TestTokenFileMustBeARegularFile: a token file that is a device or huge
// is refused at once, never read without end.
func TestTokenFileMustBeARegularFile(t *testing.T) {
	cleanEnv(t)
	props := strings.ReplaceAll(masterProps(t), "sync.token=test-token-123\n", "sync.token_file=/dev/zero\n")
	_, err := load(t, writeFile(t, "sync.properties", props))
	if err == nil || !strings.Contains(err.Error(), "sync.token_file") || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("token file /dev/zero: %v, want an error naming sync.token_file and saying it is not a regular file", err)
	}
}

func TestConfigKeyTwiceNamesBothLines(t *testing.T) {
	cleanEnv(t)
	path := writeFile(t, "sync.properties", masterProps(t)+"# later\n\nspool.max_backlog=1GiB\nSpool.Max_Backlog = 2GiB\n")
	errOut := configError(t, path)
	want := `config ` + path + `: key "spool.max_backlog" is set twice, on line 8 and on line 9; keep one`
	if !strings.Contains(errOut, want) {
		t.Errorf("stderr\n%s\nlacks\n%s", errOut, want)
	}
}

func TestUnknownEnvironmentVariableIsAnError(t *testing.T) {
	cleanEnv(t)
	path := writeFile(t, "sync.properties", masterProps(t))
	t.Setenv("SCHEDSYNC_SPOOL_MAXBACKLOG", "2GiB")
	errOut := configError(t, path)
	want := "environment variable SCHEDSYNC_SPOOL_MAXBACKLOG overrides no key; did you mean SCHEDSYNC_SPOOL_MAX_BACKLOG?"
	if !strings.Contains(errOut, want) {
		t.Errorf("stderr\n%s\nlacks\n%s", errOut, want)
	}
	t.Setenv("SCHEDSYNC_SPOOL_MAXBACKLOG", "")
	t.Setenv("SCHEDSYNC_SPOOL_MAX_BACKLOG", "2GiB") // the right one still works
	if code, out, errOut := cli(t, "--config", path, "status"); code == exitUsage {
		t.Errorf("a known variable was refused: %s%s", out, errOut)
	}
}

func TestUnknownKeyDoesNotHideTheOtherMistakes(t *testing.T) {
	cleanEnv(t)
	path := writeFile(t, "sync.properties", overlay(masterProps(t), "spool.max_backlg=1GiB\nspool.max_backlog=1GX\nlog.level=loud\n"))
	errOut := configError(t, path)
	for _, want := range []string{`unknown key "spool.max_backlg"`, `spool.max_backlog: "1GX" is not allowed`, `log.level: "loud" is not allowed`} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr\n%s\nlacks %s", errOut, want)
		}
	}
}

func TestPropertiesKeysReadsLogicalLines(t *testing.T) {
	text := "# comment\n! also a comment\n  a.b = 1\nc.d:2\ne.f 3\nlong = one \\\n  two\nesc\\=key=4\n\ng.h=\n"
	var got []string
	for _, k := range propertiesKeys([]byte(text)) {
		got = append(got, fmt.Sprintf("%s@%d", k.key, k.line))
	}
	want := "a.b@3 c.d@4 e.f@5 long@6 esc=key@8 g.h@10"
	if strings.Join(got, " ") != want {
		t.Errorf("keys %q, want %q", strings.Join(got, " "), want)
	}
}
