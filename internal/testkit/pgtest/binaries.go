package pgtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ErrNotFound is returned (wrapped) when the PostgreSQL server binaries are
// missing, so that callers can tell "not installed" from "failed to start".
var ErrNotFound = errors.New("PostgreSQL not found")

// serverBinaries must all sit in one directory: a client-only install (psql
// without the server) or a mix of versions must not count as found.
var serverBinaries = []string{"initdb", "pg_ctl", "postgres"}

// debianBinGlob is where Debian and Ubuntu install the server, outside PATH.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

// binDirEnv lets a developer pick another PostgreSQL version than the one
// found first.
const binDirEnv = "PGTEST_BINDIR"

var binDir = sync.OnceValues(findBinDir)

// runAs is the credential for PostgreSQL's processes: nil to run them as
// ourselves, the "postgres" user's when we are root.
var runAs = sync.OnceValues(lookupRunAs)

// Available reports whether a cluster can be started here: nil if the server
// binaries were found and, when running as root, the "postgres" OS user
// exists to run them as.
func Available() error {
	if _, err := binDir(); err != nil {
		return err
	}
	_, err := runAs()
	return err
}

// BinDir is the directory of the PostgreSQL server binaries the clusters
// run with.
func BinDir() (string, error) { return binDir() }

func findBinDir() (string, error) {
	if dir := os.Getenv(binDirEnv); dir != "" {
		if !hasServerBinaries(dir) {
			return "", fmt.Errorf("%w: %s=%s does not hold %s", ErrNotFound, binDirEnv, dir, strings.Join(serverBinaries, ", "))
		}
		return dir, nil
	}
	for _, name := range serverBinaries {
		p, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		// On Debian a command in PATH may be a symlink into the real
		// directory, or pg_wrapper, which is not next to initdb: follow
		// the link and use the directory only if the whole server is there.
		candidates := []string{filepath.Dir(p)}
		if real, err := filepath.EvalSymlinks(p); err == nil {
			candidates = append([]string{filepath.Dir(real)}, candidates...)
		}
		for _, dir := range candidates {
			if hasServerBinaries(dir) {
				return dir, nil
			}
		}
	}
	dirs, _ := filepath.Glob(debianBinGlob)
	slices.SortFunc(dirs, func(a, b string) int { return slices.Compare(versionOf(b), versionOf(a)) })
	for _, dir := range dirs {
		if hasServerBinaries(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("%w: %s are neither in PATH nor in %s; install the PostgreSQL server (apt-get install -y postgresql, or run `make deps`)",
		ErrNotFound, strings.Join(serverBinaries, ", "), debianBinGlob)
}

func hasServerBinaries(dir string) bool {
	for _, name := range serverBinaries {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// versionOf extracts "15" or "9.6" from /usr/lib/postgresql/15/bin as
// numbers, so that 10 sorts above 9.6.
func versionOf(binDir string) []int {
	var v []int
	for _, part := range strings.Split(filepath.Base(filepath.Dir(binDir)), ".") {
		n, err := strconv.Atoi(part)
		if err != nil {
			return nil
		}
		v = append(v, n)
	}
	return v
}

func lookupRunAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root: PostgreSQL refuses to run as root and there is no OS user \"postgres\" to run it as (%v); install the postgresql package, which creates it, or create it with `useradd --system --user-group postgres`", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse uid of user postgres: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse gid of user postgres: %w", err)
	}
	// Groups is set so that root's supplementary groups are dropped.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{uint32(gid)}}, nil
}
