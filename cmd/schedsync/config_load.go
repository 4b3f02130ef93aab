package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/go-viper/encoding/javaproperties"
	"github.com/spf13/viper"

	"github.com/schedsync/schedsync/internal/config"
)

const (
	defaultConfigPath = "/etc/schedsync/sync.properties"
	configPathEnv     = "SCHEDSYNC_CONFIG"
	envPrefix         = "SCHEDSYNC_"
)

// configFormats maps a file extension to the viper codec that reads it.
var configFormats = map[string]string{
	".properties": "properties",
	".yaml":       "yaml",
	".yml":        "yaml",
	".toml":       "toml",
}

// envName is the variable that overrides key: spool.max_backlog is
// SCHEDSYNC_SPOOL_MAX_BACKLOG.
func envName(key string) string {
	if env, ok := keyEnvs()[key]; ok {
		return env
	}
	return deriveEnvName(key)
}

func deriveEnvName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// keyEnvs maps every key to its variable, worked out once: each load
// binds them all.
var keyEnvs = sync.OnceValue(func() map[string]string {
	m := map[string]string{}
	for _, k := range config.Keys() {
		m[k.Name] = deriveEnvName(k.Name)
	}
	return m
})

// loadConfig reads the node's config file and environment into a validated
// config.Config. Every error names the file, and the key when there is one.
func (a *app) loadConfig() (*config.Config, error) {
	path, err := findConfigFile(a.configFlag)
	if err != nil {
		return nil, err
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	a.configPath = path
	l := &loader{path: path}
	return l.load()
}

// findConfigFile picks the file (--config, $SCHEDSYNC_CONFIG, the default)
// and checks that it exists, saying which paths were tried if not.
func findConfigFile(flag string) (string, error) {
	path, from := flag, "from --config"
	if path == "" {
		if p := os.Getenv(configPathEnv); p != "" {
			path, from = p, "from $"+configPathEnv+"; --config not given"
		} else {
			path, from = defaultConfigPath, "the default; --config not given, $"+configPathEnv+" not set"
		}
	}
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("config file not found: tried %s (%s); "+
			"create it (see configs/ for examples) or pass --config FILE", path, from)
	}
	if err != nil {
		return "", fmt.Errorf("config file %s: %w", path, err)
	}
	if info.IsDir() {
		return "", fmt.Errorf("config file %s (%s) is a directory; pass the sync.properties file in it", path, from)
	}
	return path, nil
}

// loader turns one config file plus the environment into a Config.
type loader struct {
	path string
	// data, when not nil, is the file's content, read from path otherwise
	// (the fuzz target decodes bytes without writing a file each time).
	data []byte
	v    *viper.Viper
}

func (l *loader) load() (*config.Config, error) {
	data, err := l.read()
	if err != nil {
		return nil, err
	}
	// Every mistake in one run: these do not stop the checks after them.
	var errs []error
	if strings.EqualFold(filepath.Ext(l.path), ".properties") {
		errs = appendErr(errs, l.checkDuplicateKeys(data))
	}
	errs = appendErr(errs, l.checkUnknownKeys())
	errs = appendErr(errs, l.checkUnknownEnv())
	for _, k := range config.Keys() {
		// Bind every key explicitly: AutomaticEnv only sees keys that the
		// file or a default already made known to viper.
		if err := l.v.BindEnv(k.Name, envName(k.Name)); err != nil {
			return nil, fmt.Errorf("config %s: bind %s: %w", l.path, envName(k.Name), err)
		}
	}
	cfg := config.DefaultConfig()
	unparsed := map[string]bool{}
	for _, k := range config.Keys() {
		raw := l.v.Get(k.Name)
		if raw == nil {
			continue // neither in the file nor in the environment
		}
		if err := k.Set(&cfg, raw); err != nil {
			errs = append(errs, l.keyError(k.Name, err))
			unparsed[k.Name] = true
		}
	}
	// Validate even after a parse error, so that one run reports every
	// mistake; a key that did not parse is not reported twice.
	cfg.FillHostDefaults(os.Hostname)
	for _, ke := range config.KeyErrors(cfg.Validate()) {
		if !unparsed[ke.Key] {
			errs = append(errs, l.keyError(ke.Key, ke))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := l.readTokenFile(&cfg); err != nil {
		return nil, err
	}
	if err := l.checkFiles(&cfg); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// read decodes the file with the codec its extension names, into a viper
// instance of its own (never the global one: tests load many configs).
func (l *loader) read() ([]byte, error) {
	ext := strings.ToLower(filepath.Ext(l.path))
	format, ok := configFormats[ext]
	if !ok {
		return nil, fmt.Errorf("config %s: unsupported file type %q; use .properties, .yaml, .yml or .toml", l.path, ext)
	}
	data := l.data
	if data == nil {
		var err error
		if data, err = os.ReadFile(l.path); err != nil {
			return nil, fmt.Errorf("config %s: %w", l.path, err)
		}
	}
	reg := viper.NewCodecRegistry()
	// A fresh codec per load: javaproperties.Codec keeps the parsed file in
	// its Properties field.
	if err := reg.RegisterCodec("properties", &javaproperties.Codec{}); err != nil {
		return nil, fmt.Errorf("config %s: %w", l.path, err)
	}
	l.v = viper.NewWithOptions(viper.WithCodecRegistry(reg))
	l.v.SetConfigType(format)
	if err := l.v.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("config %s: cannot parse as %s: %s", l.path, format, parseErrText(format, err))
	}
	return data, nil
}

// appendErr adds err to errs unless it is nil.
func appendErr(errs []error, err error) []error {
	if err != nil {
		errs = append(errs, err)
	}
	return errs
}

// parseErrText explains the one surprise of .properties files: the parser
// (magiconair/properties) expands ${NAME} from other keys and from the
// environment. Its circular-reference message quotes values, which may be
// secrets, so that one is replaced.
func parseErrText(format string, err error) string {
	msg := err.Error()
	if format != "properties" {
		return msg
	}
	const hint = "; in a .properties file ${NAME} in a value is replaced by key or environment variable NAME, " +
		"so a secret containing ${ must go in sync.token_file or the environment"
	switch {
	case strings.Contains(msg, "circular reference"):
		return "a ${...} reference in a value refers to itself" + hint
	case strings.Contains(msg, "malformed expression"):
		return "a ${ without its closing }" + hint
	}
	return msg
}

// checkUnknownKeys refuses keys that schedsync does not know, because a
// misspelt key would otherwise be ignored and its default used silently.
func (l *loader) checkUnknownKeys() error {
	var errs []error
	for _, key := range l.v.AllKeys() {
		if _, ok := config.LookupKey(key); ok {
			continue
		}
		errs = append(errs, fmt.Errorf("config %s: unknown key %q%s", l.path, key,
			didYouMean(suggestKeys(key), "; the keys are listed in the README and in configs/*.sync.properties")))
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// keyError prefixes err with where the key's value came from: the file,
// or the environment variable that overrides it.
func (l *loader) keyError(key string, err error) error {
	where := "config " + l.path
	if env := envName(key); os.Getenv(env) != "" {
		where += ", env " + env
	}
	return fmt.Errorf("%s: %w", where, err)
}

// readTokenFile loads sync.token_file into cfg.Sync.Token. Both keys set is
// refused: the operator could not tell which secret is in use.
func (l *loader) readTokenFile(cfg *config.Config) error {
	if err := l.readSecret("sync", &cfg.Sync.Token, cfg.Sync.TokenFile, "write the shared secret into it"); err != nil {
		return err
	}
	return l.readSecret("http", &cfg.HTTP.Token, cfg.HTTP.TokenFile, "write the bearer token into it")
}

// readSecret reads prefix.token_file into *token; prefix.token must then
// be empty.
func (l *loader) readSecret(prefix string, token *string, file, fill string) error {
	if file == "" {
		return nil
	}
	key := prefix + ".token_file"
	if *token != "" {
		return l.keyError(key, &config.KeyError{Key: key, Value: file,
			Reason: "is set together with " + prefix + ".token", Allowed: "set only one of them"})
	}
	data, err := readSmallFile(file, maxSecretFile)
	if err != nil {
		return l.keyError(key, &config.KeyError{Key: key, Value: file,
			Reason:  "cannot read " + file + ": " + pathErrText(err),
			Allowed: "check the path and that the user running schedsync can read it"})
	}
	t := strings.TrimRight(string(data), "\r\n")
	if strings.TrimSpace(t) == "" {
		return l.keyError(key, &config.KeyError{Key: key, Value: file,
			Reason: "file " + file + " is empty", Allowed: fill})
	}
	*token = t
	return nil
}

// maxSecretFile bounds a token file: a token is short, and a path such
// as /dev/zero must not make the loader read forever.
const maxSecretFile = 64 << 10

// readSmallFile reads a regular file of at most max bytes.
func readSmallFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: not a regular file", os.ErrInvalid)
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%w: %d bytes, more than a token file holds (%d at most)", os.ErrInvalid, st.Size(), max)
	}
	return io.ReadAll(io.LimitReader(f, max+1))
}

// checkFiles makes sure the TLS files can be read now, rather than when
// the first slave connects to a service that has long been reported up.
func (l *loader) checkFiles(cfg *config.Config) error {
	var errs []error
	for _, f := range []struct{ key, path string }{
		{"tls.cert", cfg.TLS.Cert}, {"tls.key", cfg.TLS.Key}, {"tls.ca", cfg.TLS.CA},
	} {
		if f.path == "" {
			continue
		}
		fh, err := os.Open(f.path)
		if err != nil {
			errs = append(errs, l.keyError(f.key, &config.KeyError{Key: f.key, Value: f.path,
				Reason:  "cannot read " + f.path + ": " + pathErrText(err),
				Allowed: "check the path and that the user running schedsync can read it"}))
			continue
		}
		fh.Close()
	}
	return errors.Join(errs...)
}

// pathErrText is the cause of a file error without the repeated path.
func pathErrText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
