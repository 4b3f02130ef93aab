package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoadConfig feeds arbitrary bytes to the config loader as a
// .properties, .yaml and .toml file: it must return a config or an error,
// never panic, and an error must name the file.
func FuzzLoadConfig(f *testing.F) {
	for _, name := range []string{"master.sync.properties", "slave.sync.properties"} {
		if data, err := os.ReadFile(filepath.Join("..", "..", "configs", name)); err == nil {
			f.Add(data, uint8(0))
		}
	}
	f.Add([]byte("node.role=master\nrepository.url=postgres://u@h/db\nsync.token=x\nspool.max_backlog=1.5GiB\n"), uint8(0))
	f.Add([]byte("node:\n  role: slave\n  name: s1\nmaster:\n  host: h\n  port: 7700\n"), uint8(1))
	f.Add([]byte("[node]\nrole = \"master\"\n[sync]\ntoken = \"t\"\n"), uint8(2))
	f.Add([]byte("a.b.c=\\u12\nx:y\n"), uint8(0))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, kind uint8) {
		ext := []string{".properties", ".yaml", ".toml"}[int(kind)%3]
		path := filepath.Join(dir, "fuzz"+ext)
		// Never nil (the loader would read path instead), even for empty
		// input.
		l := &loader{path: path, data: append([]byte{}, data...)}
		cfg, err := l.load()
		if err == nil && cfg == nil {
			t.Fatal("no config and no error")
		}
		if err != nil && !strings.Contains(err.Error(), path) && !strings.Contains(err.Error(), "config") {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}
