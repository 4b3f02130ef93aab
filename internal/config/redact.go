package config

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Mask replaces a secret in everything schedsync prints.
const Mask = "***"

// Redacted returns a copy of c that is safe to print or log: sync.token is
// masked, and so are http.token and any password in repository.url.
func (c Config) Redacted() Config {
	r := c
	r.Repository.Schemas = slices.Clone(c.Repository.Schemas)
	r.Repository.Tables = slices.Clone(c.Repository.Tables)
	if r.Sync.Token != "" {
		r.Sync.Token = Mask
	}
	if r.HTTP.Token != "" {
		r.HTTP.Token = Mask
	}
	r.Repository.URL = RedactURL(c.Repository.URL)
	return r
}

// String prints every key as key=value lines in .properties syntax, with
// secrets masked. It is what status and the service log show of the config.
func (c Config) String() string {
	r := c.Redacted()
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k.Name)
		b.WriteString("=")
		b.WriteString(k.Text(&r))
		b.WriteString("\n")
	}
	return b.String()
}

// kvPassword matches password=... (and sslpassword=...) in a key=value
// connection string, quoted or not, so the value can be masked.
var kvPassword = regexp.MustCompile(`(?i)(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s]*)`)

// urlUserinfo catches user:password@ in a URL that net/url refuses to parse.
var urlUserinfo = regexp.MustCompile(`^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*:)[^@]*@`)

// RedactURL masks the password of a libpq connection string, in either
// form: postgres://user:***@host/db?password=*** or host=h password=***.
// A string it cannot understand is masked as a whole rather than risk a
// leak.
func RedactURL(s string) string {
	if s == "" {
		return s
	}
	if !strings.Contains(s, "://") {
		return kvPassword.ReplaceAllString(s, "${1}"+Mask)
	}
	u, err := url.Parse(s)
	if err != nil {
		masked := urlUserinfo.ReplaceAllString(s, "${1}"+Mask+"@")
		masked = kvPassword.ReplaceAllString(masked, "${1}"+Mask)
		if masked == s && strings.Contains(s, "@") {
			return Mask
		}
		return masked
	}
	// url.String would escape the mask's asterisks in a query; a
	// placeholder keeps the structure and is swapped for the mask at the end.
	const placeholder = "SCHEDSYNC-REDACTED"
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), placeholder)
	}
	q := u.Query()
	for k := range q {
		if strings.EqualFold(k, "password") || strings.EqualFold(k, "sslpassword") {
			q.Set(k, placeholder)
		}
	}
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	return strings.ReplaceAll(u.String(), placeholder, Mask)
}

// urlInText catches user:password@ of a URL anywhere in a text.
var urlInText = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]*@`)

// RedactSecrets masks what looks like a password in free text, such as
// an error message that quotes a connection string: password=... and the
// password of a user:password@ URL.
func RedactSecrets(s string) string {
	s = urlInText.ReplaceAllString(s, "${1}"+Mask+"@")
	return kvPassword.ReplaceAllString(s, "${1}"+Mask)
}
