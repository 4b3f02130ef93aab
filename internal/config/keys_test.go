package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestKeysCoverEveryField guards against a field added to Config without a
// key (it could never be set) or two keys filling the same field.
func TestKeysCoverEveryField(t *testing.T) {
	var c Config
	seen := map[uintptr]string{}
	for _, k := range Keys() {
		p := reflect.ValueOf(k.ptr(&c)).Pointer()
		if other, dup := seen[p]; dup {
			t.Errorf("keys %s and %s fill the same field", other, k.Name)
		}
		seen[p] = k.Name
	}
	var leaves int
	rt := reflect.TypeOf(c)
	for i := range rt.NumField() {
		leaves += rt.Field(i).Type.NumField()
	}
	if leaves != len(seen) {
		t.Errorf("Config has %d fields but there are %d keys", leaves, len(seen))
	}
}

func TestKeySetParsesStrictly(t *testing.T) {
	tests := []struct {
		key  string
		in   any
		want string // Text after Set; "!" means Set must fail
	}{
		{"node.role", " master ", "master"},
		{"node.name", 2, "2"},
		{"master.host", "10.0.0.1", "10.0.0.1"},
		{"repository.schemas", "public, sched ,", "public,sched"},
		{"repository.schemas", []any{"a", "b"}, "a,b"},
		{"repository.tables", "", ""},
		{"repository.tables", []any{"a", map[string]any{}}, "!"},
		{"repository.schemas", 5, "!"},
		{"capture.allow_no_pk", "TRUE", "true"},
		{"capture.allow_no_pk", false, "false"},
		{"capture.allow_no_pk", "yes", "!"},
		{"capture.allow_no_pk", "1", "!"},
		{"capture.allow_no_pk", 1, "!"},
		{"capture.batch_size", "500", "500"},
		{"capture.batch_size", int64(500), "500"},
		{"capture.batch_size", 500.0, "500"},
		{"capture.batch_size", 500.5, "!"},
		{"capture.batch_size", "5k", "!"},
		{"capture.batch_size", true, "!"},
		{"master.port", "7700", "7700"},
		{"sync.heartbeat", "2s", "2s"},
		{"sync.heartbeat", "1m30s", "1m30s"},
		{"sync.heartbeat", "5", "!"},
		{"sync.heartbeat", 5, "!"},
		{"sync.heartbeat", "five seconds", "!"},
		{"spool.max_backlog", "2GiB", "2GiB"},
		{"spool.max_backlog", 1048576, "1MiB"},
		{"spool.max_backlog", int64(1000), "1KB"},
		{"spool.max_backlog", "1GX", "!"},
		{"spool.max_backlog", -1, "!"},
		{"spool.max_backlog", 1.5, "!"},
		{"apply.batch_max_delay", "0s", "0s"},
		{"node.role", []any{"master"}, "!"},
	}
	for _, tt := range tests {
		k, ok := LookupKey(tt.key)
		if !ok {
			t.Fatalf("LookupKey(%q) failed", tt.key)
		}
		c := DefaultConfig()
		err := k.Set(&c, tt.in)
		if tt.want == "!" {
			ke, isKeyErr := err.(*KeyError)
			if !isKeyErr || ke.Key != tt.key {
				t.Errorf("Set(%s, %#v) = %v, want a *KeyError naming the key", tt.key, tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Set(%s, %#v) = %v", tt.key, tt.in, err)
			continue
		}
		if got := k.Text(&c); got != tt.want {
			t.Errorf("Set(%s, %#v) then Text = %q, want %q", tt.key, tt.in, got, tt.want)
		}
	}
}

func TestKeySetErrorSaysWhatIsAllowed(t *testing.T) {
	k, _ := LookupKey("spool.max_backlog")
	c := DefaultConfig()
	err := k.Set(&c, "1GX")
	want := `spool.max_backlog: "1GX" is not allowed; use a size such as 64MiB`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error = %v, want it to start with %s", err, want)
	}
	k, _ = LookupKey("sync.heartbeat")
	err = k.Set(&c, "5")
	want = `sync.heartbeat: "5" is not allowed; use a duration with a unit, such as 500ms, 5s or 1m30s`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

// TestTextRoundTrips checks that what String prints reads back to the same
// config, so a dumped config is a valid config file.
func TestTextRoundTrips(t *testing.T) {
	c := validSlave()
	c.Repository.Tables = []string{"qrtz_*", "job"}
	c.Capture.PollInterval = 1500 * time.Millisecond
	c.Spool.MaxBacklog = 1536 * MiB
	c.Resync.Auto = true
	c.Failover.Peers = []string{"10.0.0.2:7700", "[::1]:7701"}
	var back Config
	for _, k := range Keys() {
		if err := k.Set(&back, k.Text(&c)); err != nil {
			t.Fatalf("Set(%s, %q): %v", k.Name, k.Text(&c), err)
		}
	}
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip changed the config:\n got %+v\nwant %+v", back, c)
	}
}

func TestKeySetErrorHidesSecrets(t *testing.T) {
	c := DefaultConfig()
	k, _ := LookupKey("sync.token")
	if err := k.Set(&c, []any{"hunter2"}); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Set(sync.token, list) = %v, want an error without the secret", err)
	}
	k, _ = LookupKey("repository.url")
	if err := k.Set(&c, map[string]any{"x": "postgres://u:hunter2@h/d"}); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Set(repository.url, map) = %v, want an error without the password", err)
	}
}
