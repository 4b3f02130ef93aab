package pgtest

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestFindBinDirFollowsLinksAndSkipsWrappers(t *testing.T) {
	real, err := binDir()
	if err != nil {
		Shared(t) // skips or fails, loudly
	}
	t.Setenv(binDirEnv, "")

	// A PATH entry that links pg_ctl alone to the real directory.
	links := t.TempDir()
	if err := os.Symlink(filepath.Join(real, "pg_ctl"), filepath.Join(links, "pg_ctl")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", links)
	if got, err := findBinDir(); err != nil || got != real {
		t.Errorf("via symlink in PATH: %q, %v; want %q", got, err, real)
	}

	// A wrapper script that is not next to initdb: the directory found
	// must be a real one, never the wrapper's.
	wrapper := t.TempDir()
	if err := os.WriteFile(filepath.Join(wrapper, "pg_ctl"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", wrapper)
	got, err := findBinDir()
	if matches, _ := filepath.Glob(debianBinGlob); len(matches) > 0 {
		if err != nil || !slices.Contains(matches, got) {
			t.Errorf("with a wrapper in PATH: %q, %v; want one of %v", got, err, matches)
		}
	} else if err == nil {
		t.Errorf("with only a wrapper: found %q", got)
	}

	t.Setenv(binDirEnv, wrapper)
	if _, err := findBinDir(); err == nil {
		t.Errorf("%s without the server accepted", binDirEnv)
	}
}

func TestVersionOrder(t *testing.T) {
	dirs := []string{"/usr/lib/postgresql/9.6/bin", "/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/10/bin"}
	slices.SortFunc(dirs, func(a, b string) int { return slices.Compare(versionOf(b), versionOf(a)) })
	if dirs[0] != "/usr/lib/postgresql/17/bin" || dirs[2] != "/usr/lib/postgresql/9.6/bin" {
		t.Errorf("order: %v", dirs)
	}
}
