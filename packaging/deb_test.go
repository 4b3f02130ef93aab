package packaging

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The package under test and what it installs.
const (
	pkgName   = "schedsync"
	binPath   = "/usr/bin/schedsync"
	unitPath  = "/lib/systemd/system/schedsync.service"
	etcDir    = "/etc/schedsync"
	masterCfg = "/etc/schedsync/master.sync.properties"
	slaveCfg  = "/etc/schedsync/slave.sync.properties"
	stateDir  = "/var/lib/schedsync"
	docDir    = "/usr/share/doc/schedsync"
	// Left by `systemctl enable`: the package must not create it.
	wantsLink = "/etc/systemd/system/multi-user.target.wants/schedsync.service"
)

// run runs a command and returns its standard output; any failure, or a run
// longer than timeout, fails the test with both outputs.
func run(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	stdout, stderr, err := runErr(timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout
}

func runErr(timeout time.Duration, name string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// dpkg runs dpkg with args and returns its output (stdout and stderr). While
// another dpkg or apt holds dpkg's lock it waits, up to 3 minutes, rather
// than fail.
func dpkg(args ...string) (string, error) {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		stdout, stderr, err := runErr(2*time.Minute, "dpkg", args...)
		if err != nil && time.Now().Before(deadline) &&
			(strings.Contains(stderr, "lock was locked by another process") || strings.Contains(stderr, "database is locked")) {
			time.Sleep(time.Second)
			continue
		}
		if err != nil {
			err = fmt.Errorf("dpkg %s: %w", strings.Join(args, " "), err)
		}
		return stdout + stderr, err
	}
}

// dpkgStatus is dpkg's abbreviated status of the package ("ii ", "rc ",
// ...), or "" when dpkg does not know it.
func dpkgStatus() string {
	out, _, err := runErr(30*time.Second, "dpkg-query", "-W", "-f=${db:Status-Abbrev}", pkgName)
	if err != nil {
		return ""
	}
	return out
}

// installed reports whether anything of the package is on the system:
// dpkg's status is known and is not "not-installed".
func installed() bool {
	s := dpkgStatus()
	return len(s) >= 2 && s[1] != 'n'
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// TestDebVersion: packaging/deb-version turns `git describe` into a valid
// Debian version that sorts in the order of the releases.
func TestDebVersion(t *testing.T) {
	for in, want := range map[string]string{
		"865e9b3":                 "0.0.0~git865e9b3",
		"865e9b3-dirty":           "0.0.0~git865e9b3+dirty",
		"v1.2.3":                  "1.2.3",
		"v1.2.3-dirty":            "1.2.3+dirty",
		"v1.2.3-rc1":              "1.2.3~rc1",
		"v1.2.3-4-gabc1234":       "1.2.3+4.gabc1234",
		"v1.2.3-4-gabc1234-dirty": "1.2.3+4.gabc1234+dirty",
		"2.0":                     "2.0",
		"dev":                     "0.0.0~dev",
	} {
		got := strings.TrimSpace(run(t, 10*time.Second, "sh", "deb-version", in))
		if got != want {
			t.Errorf("deb-version %s = %q, want %q", in, got, want)
		}
	}
	if _, err := exec.LookPath("dpkg"); err == nil {
		// dpkg --compare-versions also rejects invalid versions.
		order := []string{"0.0.0~git865e9b3", "0.0.0~git865e9b3+dirty", "1.2.3~rc1", "1.2.3", "1.2.3+4.gabc1234", "1.2.3+4.gabc1234+dirty", "1.2.4"}
		for i := 1; i < len(order); i++ {
			run(t, 10*time.Second, "dpkg", "--compare-versions", order[i-1], "lt", order[i])
		}
	}
}

// TestMaintainerScripts: POSIX sh with set -e, and they parse.
func TestMaintainerScripts(t *testing.T) {
	shell := "sh"
	if _, err := exec.LookPath("dash"); err == nil {
		shell = "dash" // stricter than bash's sh
	}
	for _, name := range []string{"postinst", "prerm", "postrm", "deb-version"} {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(data, []byte("#!/bin/sh\n")) {
			t.Errorf("%s does not start with #!/bin/sh", name)
		}
		if !bytes.Contains(data, []byte("\nset -e\n")) {
			t.Errorf("%s has no set -e line", name)
		}
		run(t, 10*time.Second, shell, "-n", name)
	}
}

// TestDebInstallsAndRemoves builds the package with `make package`, checks
// its metadata and contents, installs it, reinstalls it over a local edit,
// removes it and purges it. It needs root and dpkg; with CI=true it never
// skips for want of dpkg.
func TestDebInstallsAndRemoves(t *testing.T) {
	start := time.Now()
	ci := os.Getenv("CI") == "true"
	if os.Geteuid() != 0 {
		t.Skip("skipped: installs and purges the schedsync package with dpkg, so it needs root")
	}
	for _, tool := range []string{"dpkg", "dpkg-deb", "dpkg-query"} {
		if _, err := exec.LookPath(tool); err != nil {
			if ci {
				t.Fatalf("%s not found; CI=true and root, so this test must run: %v", tool, err)
			}
			t.Skipf("skipped: %s not found (not a Debian system)", tool)
		}
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make not found: %v", err)
	}

	// Never clobber a real installation: the purge at the end deletes the
	// schedsync user, /etc/schedsync and /var/lib/schedsync.
	if s := dpkgStatus(); installed() {
		t.Fatalf("a package named %s is already on this system (dpkg status %q): this test would replace and purge it; remove it first or run the test elsewhere", pkgName, s)
	}
	if _, _, err := runErr(10*time.Second, "getent", "passwd", "schedsync"); err == nil {
		t.Fatal("a schedsync user already exists: purging the test package would delete it")
	}
	for _, p := range []string{etcDir, stateDir, binPath} {
		if exists(p) {
			t.Fatalf("%s already exists: purging the test package would delete it", p)
		}
	}

	// Build. Others may edit the packaged sources in this checkout while
	// it runs: an installed file must equal its source before or after.
	sources := []string{"../configs/schedsync.service", "../configs/crontab",
		"../configs/master.sync.properties", "../configs/slave.sync.properties"}
	before := readAll(t, sources)
	dist := t.TempDir()
	built := time.Now()
	out := run(t, 5*time.Minute, "make", "-C", "..", "package", "DIST="+dist)
	after := readAll(t, sources)
	sameFile := func(installed, source string) {
		t.Helper()
		got, err := os.ReadFile(installed)
		if err != nil {
			t.Error(err)
		} else if !bytes.Equal(got, before[source]) && !bytes.Equal(got, after[source]) {
			t.Errorf("%s differs from %s", installed, source)
		}
	}
	t.Logf("make package (%s):\n%s", time.Since(built).Round(time.Millisecond), out)
	debs, _ := filepath.Glob(filepath.Join(dist, "schedsync_*_amd64.deb"))
	if len(debs) != 1 {
		t.Fatalf("make package made %q in %s, want one schedsync_*_amd64.deb", debs, dist)
	}
	deb := debs[0]

	// Metadata.
	fields := controlFields(t, run(t, time.Minute, "dpkg-deb", "--field", deb))
	version := fields["Version"]
	if filepath.Base(deb) != "schedsync_"+version+"_amd64.deb" {
		t.Errorf("package file %s, want schedsync_%s_amd64.deb", filepath.Base(deb), version)
	}
	if version == "" || version[0] < '0' || version[0] > '9' {
		t.Errorf("Version %q does not start with a digit", version)
	}
	for k, want := range map[string]string{
		"Package":      pkgName,
		"Architecture": "amd64",
		"Maintainer":   "schedsync developers <schedsync@localhost>",
		"Homepage":     "https://github.com/schedsync/schedsync",
	} {
		if fields[k] != want {
			t.Errorf("%s: %q, want %q", k, fields[k], want)
		}
	}
	if !slices.Contains(splitDeps(fields["Recommends"]), "postgresql-client") {
		t.Errorf("Recommends: %q, want postgresql-client", fields["Recommends"])
	}
	for _, dep := range splitDeps(fields["Depends"] + "," + fields["Pre-Depends"]) {
		if !strings.HasPrefix(dep, "libc") {
			t.Errorf("hard dependency %q: only libc is allowed", dep)
		}
	}
	if fields["License"] == "" {
		t.Error("no License field")
	}
	if desc := fields["Description"]; !strings.Contains(desc, "\n") || len(desc) < 200 {
		t.Errorf("Description has no proper long description: %q", desc)
	}
	conffiles := strings.Fields(run(t, time.Minute, "dpkg-deb", "--info", deb, "conffiles"))
	slices.Sort(conffiles)
	if want := []string{masterCfg, slaveCfg}; !slices.Equal(conffiles, want) {
		t.Errorf("conffiles %q, want %q", conffiles, want)
	}
	for _, script := range []string{"postinst", "prerm", "postrm"} {
		want, err := os.ReadFile(script)
		if err != nil {
			t.Fatal(err)
		}
		if got := run(t, time.Minute, "dpkg-deb", "--info", deb, script); got != string(want) {
			t.Errorf("the package's %s is not packaging/%s", script, script)
		}
	}

	// Contents: path -> mode and owner.
	contents := map[string]string{}
	for line := range strings.SplitSeq(run(t, time.Minute, "dpkg-deb", "--contents", deb), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 {
			contents[strings.TrimSuffix(strings.TrimPrefix(f[len(f)-1], "."), "/")] = f[0] + " " + f[1]
		}
	}
	for path, want := range map[string]string{
		binPath:                      "-rwxr-xr-x root/root",
		unitPath:                     "-rw-r--r-- root/root",
		etcDir:                       "drwxr-x--- root/root",
		masterCfg:                    "-rw-r----- root/root",
		slaveCfg:                     "-rw-r----- root/root",
		docDir + "/examples/crontab": "-rw-r--r-- root/root",
		docDir + "/README.md":        "-rw-r--r-- root/root",
	} {
		if contents[path] != want {
			t.Errorf("package content %s: %q, want %q", path, contents[path], want)
		}
	}
	for path := range contents {
		if strings.HasPrefix(path, "/etc/cron") || strings.HasPrefix(path, "/usr/local") || strings.HasPrefix(path, "/etc/systemd") {
			t.Errorf("package content %s: nothing belongs there", path)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Install.
	t.Cleanup(func() {
		if !installed() {
			return
		}
		if out, err := dpkg("--purge", pkgName); err != nil {
			t.Errorf("cleanup: %v\n%s", err, out)
		}
	})
	out, err := dpkg("-i", deb)
	t.Logf("dpkg -i:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "/etc/schedsync/sync.properties") || !strings.Contains(out, "systemctl enable --now schedsync") {
		t.Errorf("postinst did not tell how to create /etc/schedsync/sync.properties and start the service:\n%s", out)
	}
	if s := dpkgStatus(); s != "ii " {
		t.Fatalf("dpkg status after install %q, want \"ii \"", s)
	}

	// The binary: static, and stamped with the package's version.
	out = run(t, time.Minute, binPath, "version")
	first, _, _ := strings.Cut(out, "\n")
	builtVersion, ok := strings.CutPrefix(first, "schedsync ")
	if !ok || builtVersion == "" || builtVersion == "dev" {
		t.Errorf("%s version printed %q, want schedsync <version>", binPath, out)
	} else if dv := strings.TrimSpace(run(t, 10*time.Second, "sh", "deb-version", builtVersion)); dv != version {
		t.Errorf("%s version is %q (Debian %q), the package's is %q", binPath, builtVersion, dv, version)
	}
	if f, err := elf.Open(binPath); err != nil {
		t.Error(err)
	} else {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s is dynamically linked; the package declares no libc dependency", binPath)
			}
		}
		f.Close()
	}

	// The user, the group and the directories.
	run(t, 10*time.Second, "id", "schedsync")
	u, err := user.Lookup("schedsync")
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroup("schedsync")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(g.Gid)
	if u.Gid != g.Gid || u.HomeDir != stateDir {
		t.Errorf("user schedsync: gid %s, home %s; want gid %s (group schedsync), home %s", u.Gid, u.HomeDir, g.Gid, stateDir)
	}
	checkOwner(t, stateDir, uid, gid, os.ModeDir|0o750)
	checkOwner(t, etcDir, 0, gid, os.ModeDir|0o750)
	checkOwner(t, masterCfg, 0, gid, 0o640)
	checkOwner(t, slaveCfg, 0, gid, 0o640)
	checkOwner(t, binPath, 0, 0, 0o755)

	// The unit is configs/schedsync.service; the docs; nothing enabled.
	sameFile(unitPath, "../configs/schedsync.service")
	sameFile(docDir+"/examples/crontab", "../configs/crontab")
	sameFile(masterCfg, "../configs/master.sync.properties")
	sameFile(slaveCfg, "../configs/slave.sync.properties")
	if !exists(docDir + "/README.md") {
		t.Errorf("%s/README.md is missing", docDir)
	}
	if unit, err := os.ReadFile(unitPath); err != nil || !strings.Contains(string(unit), "\nExecStart=/usr/bin/schedsync --config /etc/schedsync/sync.properties start --foreground\n") {
		t.Errorf("%s does not start /usr/bin/schedsync with /etc/schedsync/sync.properties (%v)", unitPath, err)
	}
	if exists(wantsLink) {
		t.Errorf("%s exists: the package must not enable the service", wantsLink)
	}

	// The operator's steps (README): cp -p keeps root:schedsync 0640. Then
	// a local edit of a conffile survives a reinstall, which runs the
	// maintainer scripts' upgrade path.
	run(t, 10*time.Second, "cp", "-p", masterCfg, etcDir+"/sync.properties")
	checkOwner(t, etcDir+"/sync.properties", 0, gid, 0o640)
	appendFile(t, masterCfg, "# local edit\n")
	if err := os.WriteFile(stateDir+"/leftover", []byte("spool\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	out, err = dpkg("-i", deb)
	t.Logf("dpkg -i again:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(masterCfg); err != nil || !strings.HasSuffix(string(data), "# local edit\n") {
		t.Errorf("reinstall lost the local edit of %s (%v)", masterCfg, err)
	}
	checkOwner(t, stateDir, uid, gid, os.ModeDir|0o750)
	checkOwner(t, masterCfg, 0, gid, 0o640)
	if u2, err := user.Lookup("schedsync"); err != nil || u2.Uid != u.Uid {
		t.Errorf("reinstall changed the schedsync user: %v, %v", u2, err)
	}

	// Remove: the binary goes, the conffiles, the data and the user stay.
	if out, err := dpkg("--remove", pkgName); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if s := dpkgStatus(); s != "rc " {
		t.Errorf("dpkg status after remove %q, want \"rc \"", s)
	}
	for _, p := range []string{binPath, unitPath, docDir + "/examples/crontab"} {
		if exists(p) {
			t.Errorf("%s is still there after dpkg --remove", p)
		}
	}
	for _, p := range []string{masterCfg, etcDir + "/sync.properties", stateDir + "/leftover"} {
		if !exists(p) {
			t.Errorf("%s is gone after dpkg --remove; only a purge removes it", p)
		}
	}

	// Purge: everything goes, the user and group too.
	out, err = dpkg("--purge", pkgName)
	t.Logf("dpkg --purge:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	if installed() {
		t.Errorf("dpkg status after purge %q", dpkgStatus())
	}
	for _, p := range []string{binPath, unitPath, etcDir, stateDir, docDir} {
		if exists(p) {
			t.Errorf("%s is still there after dpkg --purge", p)
		}
	}
	for _, db := range []string{"passwd", "group"} {
		if out, _, err := runErr(10*time.Second, "getent", db, "schedsync"); err == nil {
			t.Errorf("%s entry schedsync is still there after dpkg --purge: %s", db, out)
		}
	}
	t.Logf("build, install, reinstall, remove and purge in %s", time.Since(start).Round(time.Millisecond))
}

// controlFields parses `dpkg-deb --field` output; continuation lines are
// joined to their field with newlines.
func controlFields(t *testing.T, control string) map[string]string {
	t.Helper()
	fields := map[string]string{}
	var last string
	for line := range strings.SplitSeq(strings.TrimRight(control, "\n"), "\n") {
		if strings.HasPrefix(line, " ") && last != "" {
			fields[last] += "\n" + strings.TrimPrefix(line, " ")
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("control line %q", line)
		}
		last = k
		fields[k] = strings.TrimSpace(v)
	}
	return fields
}

// splitDeps returns the package names of a dependency field.
func splitDeps(field string) []string {
	var names []string
	for alt := range strings.FieldsFuncSeq(field, func(r rune) bool { return r == ',' || r == '|' }) {
		if f := strings.Fields(alt); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

func checkOwner(t *testing.T, path string, uid, gid int, mode os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != uid || int(st.Gid) != gid || fi.Mode() != mode {
		t.Errorf("%s: uid %d gid %d mode %v, want uid %d gid %d mode %v", path, st.Uid, st.Gid, fi.Mode(), uid, gid, mode)
	}
}

// readAll returns the contents of files by name.
func readAll(t *testing.T, files []string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m[f] = data
	}
	return m
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
