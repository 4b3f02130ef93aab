// Package grants works out the database privileges that schedsync needs
// on a repository, checks which ones a role holds, and writes the GRANT
// and ALTER ROLE statements that give it the rest.
//
// What each side needs, and why (README: Database roles):
//
//   - Every node: USAGE on the replicated schemas; CREATE on the database
//     while schema schedsync does not exist (install creates it), and
//     ownership of schema schedsync and everything in it once it does.
//   - Master, either mode: SELECT on the replicated tables and sequences
//     (backups, verify; the sequence sampler sees no value without it).
//   - Master, trigger mode: TRIGGER on the replicated tables, for install.
//     The capture functions are SECURITY DEFINER, so the scheduler's own
//     role needs nothing.
//   - Master, logical mode: the REPLICATION attribute (the slot and its
//     stream); for install, CREATE on the database (the publication) and
//     membership in the role that owns the tables: PostgreSQL lets only a
//     table's owner publish it or set its REPLICA IDENTITY.
//   - Slave: SELECT, INSERT, UPDATE, DELETE and TRUNCATE on the tables,
//     SELECT and UPDATE on the sequences (setval), and SET on parameter
//     session_replication_role (PostgreSQL 15: GRANT SET ON PARAMETER), so
//     that the slave's own triggers and foreign keys stay quiet during
//     apply and restore.
//   - Fencing (switchover, fail-back, automatic failover on the master):
//     membership in the database's owner (ALTER DATABASE ... SET
//     default_transaction_read_only), pg_read_all_stats (to see the
//     scheduler's sessions) and pg_signal_backend (to end them).
//   - Schema changes (ddl.replicate): event triggers only a superuser can
//     create; applying the changes on a slave runs them as the tables'
//     owner. Both are advice, not requirements: without them schema
//     changes are not replicated and install says so.
//
// A superuser holds everything. Since a failover swaps the roles, a node
// that may be promoted needs both sides' privileges.
package grants

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/config"
)

// Querier is what Work needs of a connection.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Request says for which role, and for which work, privileges are wanted.
type Request struct {
	// Role is checked and named in the statements; "" is the connection's
	// own role.
	Role string
	// Master and Slave select the sides.
	Master, Slave bool
	// Install adds what creating schedsync's objects needs: CREATE on the
	// database while schema schedsync is missing (and, in logical mode, for
	// the publication).
	Install bool
	// Fence adds what making the repository read only needs.
	Fence bool
	// Demote adds what dropping a master's capture objects needs, when a
	// switchover makes the master a slave or a resync replaces a former
	// master's data: only a table's owner may drop its triggers or reset
	// its REPLICA IDENTITY, and only a REPLICATION role may drop a slot.
	Demote bool
	// Mode is the master's capture mode.
	Mode config.CaptureMode
	// Schemas and Tables select the replicated tables, as
	// repository.schemas and repository.tables do.
	Schemas, Tables []string
	// DDL is ddl.replicate: adds the advice of schema change replication.
	DDL bool
}

// ForConfig is the request of a node's config: its role's side, with
// install's needs when install is true.
func ForConfig(cfg *config.Config, install bool) Request {
	return Request{
		Master:  cfg.Node.Role == config.RoleMaster,
		Slave:   cfg.Node.Role == config.RoleSlave,
		Install: install,
		Mode:    cfg.Capture.Mode,
		Schemas: cfg.Repository.Schemas,
		Tables:  cfg.Repository.Tables,
		DDL:     cfg.DDL.Replicate,
	}
}

// Need is one privilege.
type Need struct {
	// Why says which work needs it.
	Why string
	// Statement gives it (ending in ";"), or, for advice, is a comment.
	Statement string
	// Held is true when the role has it.
	Held bool
	// Advice is not required: schedsync works without it, doing less
	// (e.g. no schema change replication). Never counted as missing.
	Advice bool
}

// Plan is the privileges of a request.
type Plan struct {
	Role     string // the role, unquoted
	Database string // the database, unquoted
	Exists   bool   // the role exists
	Super    bool   // the role is a superuser: it holds everything
	Needs    []Need
}

// Missing is the required needs the role does not hold.
func (p *Plan) Missing() []Need {
	var m []Need
	for _, n := range p.Needs {
		if !n.Held && !n.Advice {
			m = append(m, n)
		}
	}
	return m
}

// Script is the plan as a SQL script for psql: every need with a comment
// saying why, or only the missing ones (missingOnly). Advice is commented
// out: running the script gives exactly the required privileges.
func (p *Plan) Script(missingOnly bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "-- Privileges of role %s on database %s for schedsync.\n", p.Role, p.Database)
	b.WriteString("-- Run as a superuser: psql -v ON_ERROR_STOP=1 -d DATABASE -f FILE\n")
	if p.Super {
		b.WriteString("-- The role is a superuser: it needs nothing more.\n")
	}
	wrote := 0
	for _, n := range p.Needs {
		if missingOnly && (n.Held || n.Advice) {
			continue
		}
		state := ""
		switch {
		case n.Advice && strings.HasPrefix(n.Statement, "--"):
			state = " (optional)"
		case n.Advice:
			state = " (optional: remove the -- to run it)"
		case n.Held && p.Exists:
			state = " (held)"
		}
		stmt := n.Statement
		if n.Advice && !strings.HasPrefix(stmt, "--") {
			// Printed for the operator to choose, not run with the rest.
			stmt = "-- " + stmt
		}
		fmt.Fprintf(&b, "\n-- %s%s\n%s\n", n.Why, state, stmt)
		wrote++
	}
	if missingOnly && wrote == 0 {
		b.WriteString("-- Nothing is missing.\n")
	}
	return b.String()
}

// MissingError is returned by Check: the role lacks required privileges.
type MissingError struct {
	Plan *Plan
	Work string // what was about to run, e.g. "install"
}

func (e *MissingError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "database role %s lacks privileges that %s needs on database %s; as a superuser, run:", e.Plan.Role, e.Work, e.Plan.Database)
	for _, n := range e.Plan.Missing() {
		fmt.Fprintf(&b, "\n    %s  -- %s", n.Statement, n.Why)
	}
	fmt.Fprintf(&b, "\nthen try again (schedsync grants --role %s prints every privilege schedsync needs)", e.Plan.Role)
	return b.String()
}

// Check works out the plan of r for the connection's own role and returns
// a *MissingError naming the missing statements, or nil.
func Check(ctx context.Context, q Querier, r Request, work string) error {
	r.Role = ""
	p, err := Work(ctx, q, r)
	if err != nil {
		return fmt.Errorf("check the privileges %s needs: %w", work, err)
	}
	if len(p.Missing()) > 0 {
		return &MissingError{Plan: p, Work: work}
	}
	return nil
}

// relation is a replicated table or a sequence of the replicated schemas.
type relation struct {
	schema, name string
	sequence     bool
	owner        string
	ownerSuper   bool
	owned        bool     // the role is, or is a member of, the owner
	held         []string // privileges the role holds on it
}

func (r relation) quoted() string {
	return change.QuoteIdent(r.schema) + "." + change.QuoteIdent(r.name)
}

// Work works out the plan of r: which privileges it needs, and which of
// them the role holds.
func Work(ctx context.Context, q Querier, r Request) (*Plan, error) {
	p := &Plan{Role: r.Role}
	var version int
	err := q.QueryRow(ctx, `SELECT current_database()::text, coalesce(nullif($1::text, ''), current_user::text),
		current_setting('server_version_num')::int`, r.Role).Scan(&p.Database, &p.Role, &version)
	if err != nil {
		return nil, err
	}
	var replication bool
	err = q.QueryRow(ctx, `SELECT true, rolsuper, rolreplication OR rolsuper FROM pg_roles WHERE rolname = $1`, p.Role).
		Scan(&p.Exists, &p.Super, &replication)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, err
	}
	role := change.QuoteIdent(p.Role)
	db := change.QuoteIdent(p.Database)
	// A role that does not exist yet holds nothing: list the relations
	// with the connection's own role, then forget what that one holds.
	lister := p.Role
	if !p.Exists {
		lister = ""
		p.Needs = append(p.Needs, Need{Why: "schedsync connects as this role", Statement: "CREATE ROLE " + role + " LOGIN;"})
	}
	rels, err := relations(ctx, q, lister, r)
	if err != nil {
		return nil, err
	}
	if !p.Exists {
		for i := range rels {
			rels[i].held, rels[i].owned = nil, false
		}
	}
	add := func(why, stmt string, held bool) {
		p.Needs = append(p.Needs, Need{Why: why, Statement: stmt, Held: held || p.Super})
	}
	has := func(sql string, args ...any) (bool, error) {
		if !p.Exists {
			return false, nil
		}
		var ok bool
		err := q.QueryRow(ctx, sql, args...).Scan(&ok)
		return ok, err
	}

	// Schema schedsync.
	var schedsyncExists bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'schedsync')`).Scan(&schedsyncExists); err != nil {
		return nil, err
	}
	logicalMaster := r.Master && r.Mode == config.CaptureLogical
	if (r.Install && !schedsyncExists) || (r.Install && logicalMaster) {
		held, err := has(`SELECT has_database_privilege($1, current_database(), 'CREATE')`, p.Role)
		if err != nil {
			return nil, err
		}
		why := "install creates schema schedsync"
		if logicalMaster {
			why = "install creates schema schedsync and publication schedsync"
		}
		add(why, fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s;", db, role), held)
	}
	if schedsyncExists {
		stmts, err := foreignObjects(ctx, q, p.Role, p.Exists)
		if err != nil {
			return nil, err
		}
		for _, s := range stmts {
			add("schedsync keeps its state in schema schedsync, whose objects its role must own (they were created by another role)", s, false)
		}
	}

	// Role attributes and parameters.
	if logicalMaster {
		add("capture.mode = logical reads a replication slot", fmt.Sprintf("ALTER ROLE %s REPLICATION;", role), replication)
	} else if r.Demote && r.Mode == config.CaptureLogical {
		add("a master that becomes a slave drops its replication slot", fmt.Sprintf("ALTER ROLE %s REPLICATION;", role), replication)
	}
	if r.Slave {
		held := false
		if version >= 150000 {
			held, err = has(`SELECT has_parameter_privilege($1, 'session_replication_role', 'SET')`, p.Role)
		}
		if err != nil {
			return nil, err
		}
		stmt := fmt.Sprintf("GRANT SET ON PARAMETER session_replication_role TO %s;", role)
		if version < 150000 {
			stmt = fmt.Sprintf("ALTER ROLE %s SUPERUSER; -- before PostgreSQL 15 only a superuser may set session_replication_role", role)
		}
		add("apply and restore set session_replication_role = replica, so that the slave's own triggers and foreign keys stay quiet", stmt, held)
	}

	// Schemas, tables and sequences.
	for _, s := range r.Schemas {
		if s == "schedsync" {
			continue
		}
		var exists, held bool
		err := q.QueryRow(ctx, `SELECT true, CASE WHEN $3 THEN has_schema_privilege($2, n.oid, 'USAGE') ELSE false END
			FROM pg_namespace n WHERE nspname = $1`, s, p.Role, p.Exists).Scan(&exists, &held)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // reported by the work itself
		}
		if err != nil {
			return nil, err
		}
		if r.Master || r.Slave {
			add("the replicated tables are in schema "+s, fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s;", change.QuoteIdent(s), role), held)
		}
		tableNeeds(p, r, s, rels)
	}

	if r.Master && r.DDL {
		p.Needs = append(p.Needs, Need{Advice: true, Held: p.Super,
			Why:       "ddl.replicate: capturing schema changes needs event triggers, which only a superuser can create",
			Statement: "-- run schedsync install once as a superuser, or set ddl.replicate = false",
		})
	}

	if r.Fence {
		held, err := has(`SELECT pg_has_role($1, (SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE')`, p.Role)
		if err != nil {
			return nil, err
		}
		var dbOwner string
		var dbOwnerSuper bool
		err = q.QueryRow(ctx, `SELECT r.rolname::text, r.rolsuper FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba
			WHERE d.datname = current_database()`).Scan(&dbOwner, &dbOwnerSuper)
		if err != nil {
			return nil, err
		}
		why := "switchover and fencing make the repository read only (ALTER DATABASE ... SET default_transaction_read_only), which only the database's owner may do"
		if dbOwnerSuper {
			add(why, fmt.Sprintf("ALTER DATABASE %s OWNER TO %s; -- the database belongs to superuser %s; or give it to the scheduler's role and grant that role", db, role, dbOwner), held)
		} else {
			add(why, fmt.Sprintf("GRANT %s TO %s;", change.QuoteIdent(dbOwner), role), held)
		}
		for _, builtin := range []struct{ name, why string }{
			{"pg_read_all_stats", "switchover sees the scheduler's sessions in pg_stat_activity"},
			{"pg_signal_backend", "switchover ends the scheduler's sessions opened before the repository became read only"},
		} {
			held, err := has(`SELECT pg_has_role($1, $2, 'USAGE')`, p.Role, builtin.name)
			if err != nil {
				return nil, err
			}
			add(builtin.why, fmt.Sprintf("GRANT %s TO %s;", builtin.name, role), held)
		}
	}
	p.Needs = merge(p.Needs)
	return p, nil
}

// merge makes one need of the needs with the same statement (e.g. the
// tables' owner, for a logical master and for fencing): required if any
// of them is.
func merge(needs []Need) []Need {
	var out []Need
	at := map[string]int{}
	for _, n := range needs {
		i, seen := at[n.Statement]
		if !seen || strings.HasPrefix(n.Statement, "--") {
			at[n.Statement] = len(out)
			out = append(out, n)
			continue
		}
		o := &out[i]
		o.Why += "; " + n.Why
		o.Advice = o.Advice && n.Advice
		o.Held = o.Held && n.Held
	}
	return out
}

// tablePrivileges is what each side needs on the tables and sequences.
func tablePrivileges(r Request) (tables, sequences []string) {
	if r.Master {
		tables = append(tables, "SELECT")
		if r.Mode != config.CaptureLogical && r.Install {
			tables = append(tables, "TRIGGER")
		}
		sequences = append(sequences, "SELECT")
	}
	if r.Slave {
		tables = append(tables, "SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
		sequences = append(sequences, "SELECT", "UPDATE")
	}
	order := []string{"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "TRIGGER"}
	norm := func(s []string) []string {
		slices.SortFunc(s, func(a, b string) int { return slices.Index(order, a) - slices.Index(order, b) })
		return slices.Compact(s)
	}
	return norm(tables), norm(sequences)
}

// tableNeeds adds the needs on the tables and sequences of schema s.
func tableNeeds(p *Plan, r Request, s string, rels []relation) {
	tablePrivs, seqPrivs := tablePrivileges(r)
	role := change.QuoteIdent(p.Role)
	var tables, seqs []relation
	for _, rel := range rels {
		if rel.schema != s {
			continue
		}
		if rel.sequence {
			seqs = append(seqs, rel)
		} else {
			tables = append(tables, rel)
		}
	}
	whole := len(r.Tables) == 0
	for _, kind := range []struct {
		rels  []relation
		privs []string
		noun  string
		why   string
	}{
		{tables, tablePrivs, "TABLES", whyTables(r)},
		{seqs, seqPrivs, "SEQUENCES", whySequences(r)},
	} {
		if len(kind.privs) == 0 || len(kind.rels) == 0 {
			continue
		}
		held := true
		var names []string
		for _, rel := range kind.rels {
			names = append(names, rel.quoted())
			for _, priv := range kind.privs {
				if !slices.Contains(rel.held, priv) {
					held = false
				}
			}
		}
		if !p.Exists {
			held = false
		}
		privs := strings.Join(kind.privs, ", ")
		var stmt string
		switch {
		case whole:
			stmt = fmt.Sprintf("GRANT %s ON ALL %s IN SCHEMA %s TO %s;", privs, kind.noun, change.QuoteIdent(s), role)
		case kind.noun == "SEQUENCES":
			stmt = fmt.Sprintf("GRANT %s ON SEQUENCE %s TO %s;", privs, strings.Join(names, ", "), role)
		default:
			stmt = fmt.Sprintf("GRANT %s ON TABLE %s TO %s;", privs, strings.Join(names, ", "), role)
		}
		p.Needs = append(p.Needs, Need{Why: kind.why, Statement: stmt, Held: held || p.Super})
		if whole {
			// Tables a migration creates later: their owner's default
			// privileges give them the same grants.
			owners := map[string]bool{}
			for _, rel := range kind.rels {
				if !rel.ownerSuper {
					owners[rel.owner] = true
				}
			}
			for _, o := range slices.Sorted(maps.Keys(owners)) {
				p.Needs = append(p.Needs, Need{Advice: true, Held: p.Super,
					Why: fmt.Sprintf("%s that %s creates in schema %s later get the same grants", strings.ToLower(kind.noun), o, s),
					Statement: fmt.Sprintf("ALTER DEFAULT PRIVILEGES FOR ROLE %s IN SCHEMA %s GRANT %s ON %s TO %s;",
						change.QuoteIdent(o), change.QuoteIdent(s), privs, kind.noun, role)})
			}
		}
	}
	if r.Master && r.Mode == config.CaptureLogical && r.Install {
		ownerNeeds(p, tables, "capture.mode = logical: only a table's owner may add it to a publication or set its REPLICA IDENTITY", false)
	}
	if r.Demote {
		ownerNeeds(p, tables, "a master that becomes a slave (switchover) drops its capture triggers and the REPLICA IDENTITY FULL it set: only a table's owner may", false)
	}
	if r.Slave && r.DDL {
		ownerNeeds(p, tables, "ddl.replicate: the slave runs the master's schema changes as the owner of the changed table (not needed while the master captures none)", true)
	}
}

// ownerNeeds adds membership in the owners of tables.
func ownerNeeds(p *Plan, tables []relation, why string, advice bool) {
	role := change.QuoteIdent(p.Role)
	seen := map[string]bool{}
	for _, t := range tables {
		if seen[t.owner] {
			continue
		}
		seen[t.owner] = true
		held := p.Super
		for _, u := range tables {
			if u.owner == t.owner && u.owned {
				held = true
			}
		}
		stmt := fmt.Sprintf("GRANT %s TO %s;", change.QuoteIdent(t.owner), role)
		if t.ownerSuper {
			stmt = fmt.Sprintf("-- tables such as %s belong to superuser %s: give them to the scheduler's role (ALTER TABLE ... OWNER TO ...) and grant that role to %s", t.quoted(), t.owner, role)
		}
		p.Needs = append(p.Needs, Need{Why: why, Statement: stmt, Held: held, Advice: advice})
	}
}

func whyTables(r Request) string {
	var parts []string
	if r.Master {
		s := "the master reads the replicated tables (backup, verify)"
		if r.Mode != config.CaptureLogical && r.Install {
			s += " and puts capture triggers on them"
		}
		parts = append(parts, s)
	}
	if r.Slave {
		parts = append(parts, "the slave writes them (apply, restore)")
	}
	return strings.Join(parts, "; ")
}

func whySequences(r Request) string {
	var parts []string
	if r.Master {
		parts = append(parts, "the master samples the sequences (pg_sequences shows no value without SELECT)")
	}
	if r.Slave {
		parts = append(parts, "the slave moves them forward (setval)")
	}
	return strings.Join(parts, "; ")
}

// relations lists the replicated tables and the sequences of the
// replicated schemas, with what role holds on them.
func relations(ctx context.Context, q Querier, role string, r Request) ([]relation, error) {
	rows, err := q.Query(ctx, `
		WITH r AS (SELECT coalesce(nullif($1::text, ''), current_user::text) AS role)
		SELECT n.nspname::text, c.relname::text, c.relkind = 'S', o.rolname::text, o.rolsuper,
		       pg_has_role(r.role, c.relowner, 'USAGE'),
		       array_remove(ARRAY[
		         CASE WHEN has_table_privilege(r.role, c.oid, 'SELECT') THEN 'SELECT' END,
		         CASE WHEN c.relkind = 'r' AND has_table_privilege(r.role, c.oid, 'INSERT') THEN 'INSERT' END,
		         CASE WHEN has_table_privilege(r.role, c.oid, 'UPDATE') THEN 'UPDATE' END,
		         CASE WHEN c.relkind = 'r' AND has_table_privilege(r.role, c.oid, 'DELETE') THEN 'DELETE' END,
		         CASE WHEN c.relkind = 'r' AND has_table_privilege(r.role, c.oid, 'TRUNCATE') THEN 'TRUNCATE' END,
		         CASE WHEN c.relkind = 'r' AND has_table_privilege(r.role, c.oid, 'TRIGGER') THEN 'TRIGGER' END], NULL)
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_roles o ON o.oid = c.relowner
		CROSS JOIN r
		WHERE c.relkind IN ('r', 'S') AND n.nspname = ANY ($2) AND n.nspname <> 'schedsync'
		ORDER BY 1, 2`, role, r.Schemas)
	if err != nil {
		return nil, err
	}
	all, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (relation, error) {
		var rel relation
		err := row.Scan(&rel.schema, &rel.name, &rel.sequence, &rel.owner, &rel.ownerSuper, &rel.owned, &rel.held)
		return rel, err
	})
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(rel relation) bool {
		return !rel.sequence && !config.MatchTables(r.Tables, rel.schema, rel.name)
	}), nil
}

// foreignObjects are the statements that give role the objects of schema
// schedsync it does not own: left by an install as another role (often a
// superuser), they would make the next install or apply fail halfway.
func foreignObjects(ctx context.Context, q Querier, role string, exists bool) ([]string, error) {
	rows, err := q.Query(ctx, `
		SELECT 'ALTER SCHEMA schedsync OWNER TO ' || quote_ident($1) || ';'
		FROM pg_namespace n WHERE n.nspname = 'schedsync' AND NOT (CASE WHEN $2 THEN pg_has_role($1, n.nspowner, 'USAGE') ELSE false END)
		UNION ALL
		SELECT * FROM (SELECT 'ALTER TABLE schedsync.' || quote_ident(c.relname) || ' OWNER TO ' || quote_ident($1) || ';'
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'schedsync' AND c.relkind IN ('r', 'p') AND NOT (CASE WHEN $2 THEN pg_has_role($1, c.relowner, 'USAGE') ELSE false END)
		ORDER BY c.relname) t
		UNION ALL
		SELECT * FROM (SELECT 'ALTER FUNCTION ' || p.oid::regprocedure::text || ' OWNER TO ' || quote_ident($1) || ';'
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'schedsync' AND NOT (CASE WHEN $2 THEN pg_has_role($1, p.proowner, 'USAGE') ELSE false END)
		ORDER BY 1) f`, role, exists)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
