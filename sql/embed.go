// Package sql holds the SQL that schedsync installs into a repository
// database, embedded into the binary. It owns the shape of the objects in
// schema schedsync; the Go packages that use them (capture, apply) must
// create them only through these scripts.
package sql

import (
	_ "embed"
	"strings"

	"github.com/schedsync/schedsync/internal/change"
)

// SchemaVersion is recorded in schedsync.meta. Install re-runs the scripts
// only when the recorded version differs, so a second install changes
// nothing.
const SchemaVersion = "5"

// State creates schema schedsync with the tables every node has: the
// metadata row and the apply state of a slave.
//
//go:embed state.sql
var State string

// CaptureState creates the capture state table every master has, in
// either capture mode.
//
//go:embed capture_state.sql
var CaptureState string

// Capture creates the audit table and the trigger functions of trigger
// capture on a master, with the text settings rendered in.
var Capture = strings.ReplaceAll(captureTemplate, "{{TEXT_SETTINGS}}", change.FunctionSQL())

//go:embed capture_trigger.sql
var captureTemplate string

// DDL creates what schema change capture needs on a master, in either
// capture mode: its configuration, the shapes of the captured tables and
// the event trigger functions (install creates the event triggers).
//
//go:embed ddl.sql
var DDL string
