package backup

import (
	"fmt"
	"slices"
	"time"

	"github.com/schedsync/schedsync/internal/change"
)

// Manifest describes a backup: where and when it was taken, the position it
// restores to, and every table and sequence in it. It is the trailer of the
// file, written once the counts and checksums are known.
type Manifest struct {
	FormatVersion int    `json:"format_version"`
	Source        Source `json:"source"`
	// CaptureMode is the capture mode whose position Position is.
	CaptureMode string `json:"capture_mode"`
	// Position is the spool position the backup's snapshot equals: it
	// holds every transaction at or before it and none after, so apply
	// resumes with the transactions after it.
	Position uint64 `json:"position"`
	// CaptureEpoch is the capture history Position belongs to; the
	// restored slave applies only changes of that history.
	CaptureEpoch uint64 `json:"capture_epoch,string"`
	// SnapshotTime is when the snapshot was taken (master clock).
	SnapshotTime time.Time `json:"snapshot_time"`
	// Finished is when the last table was copied.
	Finished  time.Time  `json:"finished"`
	Tables    []Table    `json:"tables"`
	Sequences []Sequence `json:"sequences"`
	// Rows and RawBytes are the totals over the tables.
	Rows     int64 `json:"rows"`
	RawBytes int64 `json:"raw_bytes"`
}

// Source identifies the master database the backup was taken from.
type Source struct {
	SystemIdentifier uint64 `json:"system_identifier,string"`
	Database         string `json:"database"`
	ServerVersion    int    `json:"server_version_num"`
	Encoding         string `json:"encoding"`
}

// Table is one replicated table in a backup.
type Table struct {
	TableHeader
	TableEnd
}

// TableHeader is what the begin frame of a table says.
type TableHeader struct {
	Schema  string   `json:"schema"`
	Name    string   `json:"name"`
	Columns []Column `json:"columns"`
	// Format is the COPY format of the data: "binary", or "text" for a
	// table with a column whose binary form holds type OIDs (arrays and
	// composites of user-defined types), which differ between databases.
	Format string `json:"format"`
}

// TableEnd is what the end frame of a table says.
type TableEnd struct {
	Rows     int64  `json:"rows"`
	RawBytes int64  `json:"raw_bytes"`
	SHA256   string `json:"sha256"` // of the raw COPY stream, hex
}

// Column is a column's name and type as format_type prints it.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Sequence is a sequence's state in the backup: setval(last_value,
// is_called) recreates it.
type Sequence struct {
	Schema    string `json:"schema"`
	Name      string `json:"name"`
	LastValue int64  `json:"last_value"`
	IsCalled  bool   `json:"is_called"`
}

// Summary is one line about the backup: tables, rows, raw bytes and
// position.
func (m *Manifest) Summary() string {
	return fmt.Sprintf("%s, %s rows (%s raw), %s, position %d of capture history %016x",
		plural(len(m.Tables), "table"), count(m.Rows), size(m.RawBytes), plural(len(m.Sequences), "sequence"), m.Position, m.CaptureEpoch)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// COPY formats.
const (
	formatBinary = "binary"
	formatText   = "text"
)

// QualifiedName is the table's quoted schema-qualified name.
func (t *TableHeader) QualifiedName() string {
	return change.QuoteIdent(t.Schema) + "." + change.QuoteIdent(t.Name)
}

// String is schema.name, for messages.
func (t *TableHeader) String() string { return t.Schema + "." + t.Name }

// QualifiedName is the sequence's quoted schema-qualified name.
func (s *Sequence) QualifiedName() string {
	return change.QuoteIdent(s.Schema) + "." + change.QuoteIdent(s.Name)
}

func (t *TableHeader) equal(o *TableHeader) bool {
	return t.Schema == o.Schema && t.Name == o.Name && t.Format == o.Format && slices.Equal(t.Columns, o.Columns)
}

func (t *TableHeader) check() error {
	if t.Schema == "" || t.Name == "" || len(t.Columns) == 0 {
		return fmt.Errorf("table %q.%q with %d columns", t.Schema, t.Name, len(t.Columns))
	}
	if t.Format != formatBinary && t.Format != formatText {
		return fmt.Errorf("table %s has unknown COPY format %q", t, t.Format)
	}
	for _, c := range t.Columns {
		if c.Name == "" || c.Type == "" {
			return fmt.Errorf("table %s has a column without a name or type", t)
		}
	}
	return nil
}

// checkManifest compares the trailer with what the frames said.
func checkManifest(m *Manifest, tables []Table) error {
	if m.FormatVersion != FormatVersion {
		return fmt.Errorf("manifest format version %d, file header says %d", m.FormatVersion, FormatVersion)
	}
	if len(m.Tables) != len(tables) {
		return fmt.Errorf("manifest lists %d tables, the file holds %d", len(m.Tables), len(tables))
	}
	var rows, raw int64
	for i := range tables {
		mt, ft := &m.Tables[i], &tables[i]
		if !mt.TableHeader.equal(&ft.TableHeader) {
			return fmt.Errorf("manifest table %d (%s) differs from its begin frame (%s)", i, mt, ft)
		}
		if mt.TableEnd != ft.TableEnd {
			return fmt.Errorf("manifest says table %s has %d rows, %d bytes, sha256 %s; its data has %d rows, %d bytes, sha256 %s",
				mt, mt.Rows, mt.RawBytes, mt.SHA256, ft.Rows, ft.RawBytes, ft.SHA256)
		}
		rows += ft.Rows
		raw += ft.RawBytes
	}
	if m.Rows != rows || m.RawBytes != raw {
		return fmt.Errorf("manifest totals %d rows, %d bytes; the tables add up to %d rows, %d bytes", m.Rows, m.RawBytes, rows, raw)
	}
	for _, s := range m.Sequences {
		if s.Schema == "" || s.Name == "" {
			return fmt.Errorf("manifest has a sequence without a name")
		}
	}
	return nil
}
