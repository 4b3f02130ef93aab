package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/schedsync/schedsync/internal/config"
)

// reservedEnv are SCHEDSYNC_ variables that are not config keys: the
// config file's path, what start tells the service it detaches, the CPU
// profile, and what hook commands are given (a hook may run schedsync).
var reservedEnv = map[string]bool{
	configPathEnv: true, readyFDEnv: true, profileEnv: true,
	"SCHEDSYNC_EVENT": true, "SCHEDSYNC_ROLE": true, "SCHEDSYNC_GENERATION": true, "SCHEDSYNC_NODE": true,
}

// checkUnknownEnv refuses SCHEDSYNC_ variables that override no key: a
// misspelt one (SCHEDSYNC_SPOOL_MAXBACKLOG) would be ignored silently.
func (l *loader) checkUnknownEnv() error {
	known := map[string]bool{}
	for _, env := range keyEnvs() {
		known[env] = true
	}
	var errs []error
	for _, kv := range os.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		// Empty counts as unset, as for the keys' own variables.
		if !strings.HasPrefix(name, envPrefix) || value == "" || known[name] || reservedEnv[name] {
			continue
		}
		errs = append(errs, fmt.Errorf("config %s: environment variable %s overrides no key%s", l.path, name,
			didYouMean(suggestEnv(name), "; a key's variable is SCHEDSYNC_ and the key in capitals with _ for . (spool.max_backlog: SCHEDSYNC_SPOOL_MAX_BACKLOG), or unset it")))
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// suggestEnv returns the variables of known keys a small edit away from
// name, closest first, at most three.
func suggestEnv(name string) []string {
	var envs []string
	for _, k := range config.Keys() {
		envs = append(envs, envName(k.Name))
	}
	return nearest(name, envs, max(2, len(name)/6), nil)
}

// checkDuplicateKeys refuses a key set twice in a .properties file, where
// the parser would let the last one win silently. (YAML and TOML parsers
// refuse duplicates themselves.)
func (l *loader) checkDuplicateKeys(data []byte) error {
	first := map[string]int{}
	var errs []error
	for _, e := range propertiesKeys(data) {
		k := strings.ToLower(e.key)
		if at, ok := first[k]; ok {
			errs = append(errs, fmt.Errorf("config %s: key %q is set twice, on line %d and on line %d; keep one (the last would win)", l.path, k, at, e.line))
			continue
		}
		first[k] = e.line
	}
	return errors.Join(errs...)
}

type propertiesKey struct {
	key  string
	line int // where its logical line starts, from 1
}

// propertiesKeys lists the keys of a .properties text with their lines:
// logical lines joined across a trailing odd backslash, comments (# or !)
// and blank lines skipped, the key ending at the first unescaped =, : or
// white space.
func propertiesKeys(data []byte) []propertiesKey {
	var out []propertiesKey
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	n, start := 0, 0
	var logical strings.Builder
	cont := false
	for sc.Scan() {
		n++
		line := sc.Text()
		if !cont {
			line = strings.TrimLeft(line, " \t\f")
			if line == "" || line[0] == '#' || line[0] == '!' {
				continue
			}
			start = n
			logical.Reset()
		} else {
			line = strings.TrimLeft(line, " \t\f")
		}
		trailing := len(line) - len(strings.TrimRight(line, "\\"))
		cont = trailing%2 == 1
		if cont {
			line = line[:len(line)-1]
		}
		logical.WriteString(line)
		if !cont {
			if k := propertiesKeyOf(logical.String()); k != "" {
				out = append(out, propertiesKey{key: k, line: start})
			}
		}
	}
	return out
}

// propertiesKeyOf is the key of one logical line, unescaped.
func propertiesKeyOf(line string) string {
	var b strings.Builder
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && i+1 < len(line):
			i++
			b.WriteByte(line[i])
		case c == '=' || c == ':' || c == ' ' || c == '\t' || c == '\f':
			return b.String()
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
