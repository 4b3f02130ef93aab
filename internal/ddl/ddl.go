// Package ddl finds, in the text a client sent, the statement that ran one
// schema change, so that the slave can run that statement alone.
//
// The master's event trigger sees each DDL command end, with its command
// tag, but only the whole text of the client's query (current_query()):
// a migration sent as one string holds many statements, DML among them,
// which the slave must not run twice (the row changes are replicated on
// their own). So the trigger records the tag and that this is the Nth
// command with that tag the text ran, and Find splits the text the way
// the server's lexer does and returns the Nth statement that the tag
// names. Statements of other kinds in between (DML, or commands that fire
// no event trigger) do not disturb the count.
package ddl

import (
	"fmt"
	"strings"
)

// Split cuts a query text into its statements, without the separating
// semicolons and surrounding space; empty statements are dropped. It
// knows quoted strings (standard, E'...' and dollar-quoted), quoted
// identifiers, both kinds of comment and the BEGIN ATOMIC ... END body of
// a SQL-standard function, whose semicolons do not end the statement.
func Split(query string) []string {
	var out []string
	start := 0
	s := &scanner{src: query}
	depth := 0 // BEGIN ATOMIC / CASE nesting in a function body
	var words []string
	flush := func(end int) {
		if st := strings.TrimSpace(query[start:end]); st != "" {
			out = append(out, st)
		}
		start, depth, words = end+1, 0, nil
	}
	for s.pos < len(s.src) {
		tok, word := s.next()
		switch {
		case tok == ';' && depth == 0:
			flush(s.pos - 1)
		case word != "":
			w := strings.ToUpper(word)
			if len(words) < 8 {
				words = append(words, w)
			}
			if isRoutine(words) {
				switch {
				case w == "ATOMIC" && len(words) > 0 && s.prevWord == "BEGIN":
					depth++
				case w == "CASE" && depth > 0:
					depth++
				case w == "END" && depth > 0:
					depth--
				}
			}
			s.prevWord = w
		}
	}
	flush(len(query))
	return out
}

// isRoutine reports whether a statement's first words create a function
// or procedure, whose SQL-standard body may hold semicolons.
func isRoutine(words []string) bool {
	w := normalize(words)
	return len(w) >= 2 && w[0] == "CREATE" && (w[1] == "FUNCTION" || w[1] == "PROCEDURE")
}

// Find returns the nth (1-based) statement of query that runs a command
// with this tag.
func Find(query, tag string, nth int) (string, error) {
	want := strings.Fields(strings.ToUpper(tag))
	if len(want) == 0 || nth < 1 {
		return "", fmt.Errorf("no command tag (%q) or number (%d) to look for", tag, nth)
	}
	n := 0
	for _, st := range Split(query) {
		if Matches(st, want) {
			n++
			if n == nth {
				return st, nil
			}
		}
	}
	return "", fmt.Errorf("the query holds %d %s statement(s), not %d: the command ran from a function, a DO block or a procedure, whose text is not a statement of its own; run the change on the slave by hand", n, tag, nth)
}

// Matches reports whether statement st runs a command of tag (its words,
// upper case).
func Matches(st string, tag []string) bool {
	words := normalize(Words(st, len(tag)+6))
	switch strings.Join(tag, " ") {
	case "CREATE TABLE AS":
		return hasPrefix(words, []string{"CREATE", "TABLE"}) || hasPrefix(words, []string{"SELECT"}) ||
			hasPrefix(words, []string{"WITH"}) || hasPrefix(words, []string{"CREATE", "MATERIALIZED", "VIEW"})
	case "SELECT INTO":
		return hasPrefix(words, []string{"SELECT"}) || hasPrefix(words, []string{"WITH"})
	case "COMMENT":
		return hasPrefix(words, []string{"COMMENT"})
	}
	return hasPrefix(words, tag)
}

func hasPrefix(words, prefix []string) bool {
	if len(words) < len(prefix) {
		return false
	}
	for i := range prefix {
		if words[i] != prefix[i] {
			return false
		}
	}
	return true
}

// normalize drops the words that a command tag leaves out: CREATE OR
// REPLACE X and CREATE UNIQUE INDEX are CREATE X and CREATE INDEX, and so
// on for the table, trigger, language and view modifiers.
func normalize(words []string) []string {
	if len(words) == 0 || words[0] != "CREATE" {
		return words
	}
	out := []string{"CREATE"}
	rest := words[1:]
	if len(rest) >= 2 && rest[0] == "OR" && rest[1] == "REPLACE" {
		rest = rest[2:]
	}
	for len(rest) > 0 {
		switch rest[0] {
		case "UNIQUE", "TEMP", "TEMPORARY", "UNLOGGED", "GLOBAL", "LOCAL", "TRUSTED", "PROCEDURAL", "CONSTRAINT", "RECURSIVE", "DEFAULT":
			rest = rest[1:]
			continue
		}
		break
	}
	return append(out, rest...)
}

// Words returns up to n leading words (keywords or bare identifiers,
// upper case) of a statement, skipping comments.
func Words(st string, n int) []string {
	s := &scanner{src: st}
	var out []string
	for s.pos < len(s.src) && len(out) < n {
		tok, word := s.next()
		if word != "" {
			out = append(out, strings.ToUpper(word))
		} else if tok != ' ' {
			break // a quoted name or punctuation ends the leading words
		}
	}
	return out
}

// WithoutConcurrently turns CREATE INDEX CONCURRENTLY and DROP INDEX
// CONCURRENTLY into their plain forms, which may run in a transaction
// block, as apply needs; other statements are returned unchanged.
func WithoutConcurrently(st string) string {
	w := normalize(Words(st, 4))
	isIndex := hasPrefix(w, []string{"CREATE", "INDEX", "CONCURRENTLY"}) || hasPrefix(w, []string{"DROP", "INDEX", "CONCURRENTLY"})
	if !isIndex {
		return st
	}
	s := &scanner{src: st}
	for s.pos < len(s.src) {
		from := s.pos
		_, word := s.next()
		if strings.EqualFold(word, "CONCURRENTLY") {
			return st[:from] + st[s.pos:]
		}
	}
	return st
}

// scanner steps through SQL text one token at a time.
type scanner struct {
	src      string
	pos      int
	prevWord string
}

// next consumes one token: it returns word for a keyword or bare
// identifier, ' ' for space and comments, and otherwise the first byte of
// the token (a quoted string comes back as a single quote, a quoted
// identifier as a double quote).
func (s *scanner) next() (tok byte, word string) {
	c := s.src[s.pos]
	switch {
	case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
		s.pos++
		return ' ', ""
	case c == '-' && s.peek(1) == '-':
		for s.pos < len(s.src) && s.src[s.pos] != '\n' {
			s.pos++
		}
		return ' ', ""
	case c == '/' && s.peek(1) == '*':
		s.blockComment()
		return ' ', ""
	case c == '\'':
		s.quoted('\'', false)
		return '\'', ""
	case c == '"':
		s.quoted('"', false)
		return '"', ""
	case c == '$':
		if tag, ok := s.dollarTag(); ok {
			s.pos += len(tag)
			if end := strings.Index(s.src[s.pos:], tag); end >= 0 {
				s.pos += end + len(tag)
			} else {
				s.pos = len(s.src)
			}
			return '\'', ""
		}
		s.pos++
		return c, ""
	case isIdentStart(c):
		from := s.pos
		for s.pos < len(s.src) && isIdentPart(s.src[s.pos]) {
			s.pos++
		}
		w := s.src[from:s.pos]
		// E'...' (and e'') is a string with backslash escapes; U&'' and
		// B''/X'' bit strings are plain quoted strings.
		if s.pos < len(s.src) && s.src[s.pos] == '\'' && len(w) == 1 {
			s.quoted('\'', w == "E" || w == "e")
			return '\'', ""
		}
		if s.pos+1 < len(s.src) && (w == "U" || w == "u") && s.src[s.pos] == '&' && (s.src[s.pos+1] == '\'' || s.src[s.pos+1] == '"') {
			s.pos++
			q := s.src[s.pos]
			s.quoted(q, false)
			return q, ""
		}
		return 0, w
	}
	s.pos++
	return c, ""
}

func (s *scanner) peek(n int) byte {
	if s.pos+n < len(s.src) {
		return s.src[s.pos+n]
	}
	return 0
}

// quoted consumes a quoted string or identifier starting at s.pos; a
// doubled quote is an escaped one, and with backslash so is \'.
func (s *scanner) quoted(q byte, backslash bool) {
	s.pos++
	for s.pos < len(s.src) {
		c := s.src[s.pos]
		switch {
		case backslash && c == '\\':
			s.pos += 2
			continue
		case c == q && s.peek(1) == q:
			s.pos += 2
			continue
		case c == q:
			s.pos++
			return
		}
		s.pos++
	}
}

// blockComment consumes a /* */ comment, which nests in PostgreSQL.
func (s *scanner) blockComment() {
	depth := 0
	for s.pos < len(s.src) {
		switch {
		case s.src[s.pos] == '/' && s.peek(1) == '*':
			depth++
			s.pos += 2
		case s.src[s.pos] == '*' && s.peek(1) == '/':
			depth--
			s.pos += 2
			if depth == 0 {
				return
			}
		default:
			s.pos++
		}
	}
}

// dollarTag reads a dollar-quote opening ($$ or $tag$) at s.pos; $1 (a
// parameter) is not one.
func (s *scanner) dollarTag() (string, bool) {
	i := s.pos + 1
	if i < len(s.src) && s.src[i] >= '0' && s.src[i] <= '9' {
		return "", false
	}
	for i < len(s.src) && s.src[i] != '$' {
		if !isIdentPart(s.src[i]) {
			return "", false
		}
		i++
	}
	if i >= len(s.src) {
		return "", false
	}
	return s.src[s.pos : i+1], true
}

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80
}

func isIdentPart(c byte) bool {
	return isIdentStart(c) || (c >= '0' && c <= '9') || c == '$'
}
