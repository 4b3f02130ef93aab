package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/apply"
	"github.com/schedsync/schedsync/internal/change"
	"github.com/schedsync/schedsync/internal/checksum"
	"github.com/schedsync/schedsync/ship"
)

// verifyTimeout bounds one verify on the master and on the slave.
const verifyTimeout = 10 * time.Minute

// VerifyResult is what `schedsync verify` prints.
type VerifyResult struct {
	Position    uint64                `json:"position"`
	Equal       bool                  `json:"equal"`
	Tables      []VerifyTable         `json:"tables"`
	Differences []checksum.Difference `json:"differences"`
}

// VerifyTable is one table's row counts on both sides.
type VerifyTable struct {
	Table       string `json:"table"`
	MasterRows  int64  `json:"master_rows"`
	SlaveRows   int64  `json:"slave_rows"`
	Equal       bool   `json:"equal"`
	SlaveExists bool   `json:"slave_exists"`
}

// answerVerify computes the master's checksums in a capture snapshot and
// sends them back to the slave that asked.
func (m *Master) answerVerify(ctx context.Context, sess *masterSession, req ship.Request) {
	reply := ship.Reply{ID: req.ID, Kind: req.Kind}
	rep, err := m.verifySnapshot(ctx)
	if err != nil {
		reply.Error = err.Error()
	} else if reply.Body, err = json.Marshal(rep); err != nil {
		reply.Error = err.Error()
	}
	if err := sess.conn.Send(ctx, reply); err != nil {
		m.log.Info("send verify reply", "slave", sess.name, "err", err)
	}
}

// verifySnapshot checksums the replicated tables in the snapshot of a
// capture poll, which equals exactly the spool position it reports.
func (m *Master) verifySnapshot(ctx context.Context) (checksum.Report, error) {
	m.mu.Lock()
	r := m.reader
	m.mu.Unlock()
	var rep checksum.Report
	if r == nil {
		return rep, errors.New("the master repository is unavailable; verify needs it")
	}
	done := r.RequestSnapshot(func(ctx context.Context, tx pgx.Tx) error {
		specs, err := checksum.CapturedSpecs(ctx, tx)
		if err != nil {
			return err
		}
		rep.Tables, rep.Sequences, err = checksum.Compute(ctx, tx, specs, m.cfg.Repository.Schemas)
		return err
	})
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	select {
	case res := <-done:
		if res.Err != nil {
			return rep, fmt.Errorf("master checksums: %w", res.Err)
		}
		rep.Position, rep.SequencesAt, rep.Epoch = res.Position, res.SequencesAt, res.Epoch
		return rep, nil
	case <-ctx.Done():
		return rep, fmt.Errorf("master checksums: %w", ctx.Err())
	}
}

// Command answers control socket commands beside status.
func (s *Slave) Command(ctx context.Context, name string, args []string) (any, error) {
	switch name {
	case "verify":
		return s.verify(ctx)
	case "promote":
		return s.promote(ctx, len(args) > 0 && args[0] == "--force")
	case "switchover":
		return s.switchover(ctx)
	}
	return nil, fmt.Errorf("unknown command %q", name)
}

// verify asks the master for its checksums at a position, holds apply at
// exactly that position, checksums the slave and compares.
func (s *Slave) verify(ctx context.Context) (VerifyResult, error) {
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	if st := s.Status(); st.State == StateNeedsResync {
		// Refused by the master (backlog, or another capture history), or
		// stopped by apply: the slave is not a copy of the master, and no
		// snapshot of the master could be compared with it.
		return VerifyResult{Differences: []checksum.Difference{{Table: "(replication)",
			What: "the slave needs a re-sync (schedsync resync) and is not a copy of its master: " + st.Error}}}, nil
	}
	master, err := s.askMaster(ctx, ship.RequestVerify)
	if err != nil {
		return VerifyResult{}, err
	}
	var mrep checksum.Report
	if err := json.Unmarshal(master, &mrep); err != nil {
		return VerifyResult{}, fmt.Errorf("decode the master's checksums: %w", err)
	}
	s.mu.Lock()
	a := s.applier
	s.mu.Unlock()
	if a == nil {
		return VerifyResult{}, errors.New("apply is not running on this slave")
	}
	release, err := a.Hold(ctx, mrep.Position)
	if err != nil {
		return VerifyResult{}, err
	}
	srep, err := s.slaveChecksums(ctx, mrep)
	release()
	if err != nil {
		return VerifyResult{}, err
	}
	if mrep.SequencesAt > mrep.Position {
		// The master read its sequences after Position; they are shipped by
		// SequencesAt. Sequences only move forward, so read them again
		// once applied that far.
		if srep.Sequences, err = s.sequencesAt(ctx, a, mrep.SequencesAt); err != nil {
			return VerifyResult{}, err
		}
	}
	return verifyResult(mrep, srep), nil
}

// slaveChecksums checksums the master's tables on the slave; a table the
// slave lacks is left out, which Compare reports.
func (s *Slave) slaveChecksums(ctx context.Context, mrep checksum.Report) (checksum.Report, error) {
	rep := checksum.Report{Position: mrep.Position}
	err := s.inSnapshot(ctx, func(tx pgx.Tx) error {
		var epoch int64
		if err := tx.QueryRow(ctx, `SELECT capture_epoch FROM schedsync.state WHERE id = 1`).Scan(&epoch); err != nil {
			return fmt.Errorf("read schedsync.state: %w", err)
		}
		rep.Epoch = uint64(epoch)
		var specs []checksum.Spec
		for _, t := range mrep.Tables {
			var ok bool
			qname := change.QuoteIdent(t.Schema) + "." + change.QuoteIdent(t.Name)
			if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, qname).Scan(&ok); err != nil {
				return err
			}
			if ok {
				specs = append(specs, t.Spec)
			}
		}
		var err error
		rep.Tables, rep.Sequences, err = checksum.Compute(ctx, tx, specs, s.cfg.Repository.Schemas)
		return err
	})
	if err != nil {
		return rep, fmt.Errorf("slave checksums: %w", err)
	}
	return rep, nil
}

// sequencesAt waits until apply has passed pos and reads the sequences.
func (s *Slave) sequencesAt(ctx context.Context, a *apply.Applier, pos uint64) ([]checksum.Sequence, error) {
	if err := a.WaitApplied(ctx, pos); err != nil {
		return nil, fmt.Errorf("compare sequences: %w", err)
	}
	var seqs []checksum.Sequence
	err := s.inSnapshot(ctx, func(tx pgx.Tx) error {
		var err error
		_, seqs, err = checksum.Compute(ctx, tx, nil, s.cfg.Repository.Schemas)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("slave sequences: %w", err)
	}
	return seqs, nil
}

// inSnapshot runs fn in a REPEATABLE READ, READ ONLY transaction on a new
// connection to the slave repository.
func (s *Slave) inSnapshot(ctx context.Context, fn func(pgx.Tx) error) error {
	conn, err := pgx.ConnectConfig(ctx, s.connCfg)
	if err != nil {
		return fmt.Errorf("connect to the slave repository: %w", err)
	}
	defer conn.Close(context.Background())
	return pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, fn)
}

func verifyResult(mrep, srep checksum.Report) VerifyResult {
	res := VerifyResult{Position: mrep.Position, Differences: checksum.Compare(mrep, srep)}
	res.Equal = len(res.Differences) == 0
	slave := map[string]checksum.Table{}
	for _, t := range srep.Tables {
		slave[t.Schema+"."+t.Name] = t
	}
	differs := map[string]bool{}
	for _, d := range res.Differences {
		differs[d.Table] = true
	}
	for _, t := range mrep.Tables {
		name := t.Schema + "." + t.Name
		st, ok := slave[name]
		res.Tables = append(res.Tables, VerifyTable{Table: name, MasterRows: t.Rows, SlaveRows: st.Rows, Equal: !differs[name], SlaveExists: ok})
	}
	return res
}

// askMaster sends a request over the current session and waits for the
// reply.
func (s *Slave) askMaster(ctx context.Context, kind ship.RequestKind) ([]byte, error) {
	s.mu.Lock()
	conn := s.conn
	s.nextReq++
	id := s.nextReq
	ch := make(chan ship.Reply, 1)
	if s.replies == nil {
		s.replies = map[uint64]chan ship.Reply{}
	}
	s.replies[id] = ch
	state := s.state
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.replies, id)
		s.mu.Unlock()
	}()
	if conn == nil {
		return nil, fmt.Errorf("the slave is not connected to its master (state %s); %s goes through that connection", state, kind)
	}
	if err := conn.Send(ctx, ship.Request{ID: id, Kind: kind}); err != nil {
		return nil, fmt.Errorf("ask the master: %w", err)
	}
	select {
	case r := <-ch:
		if r.Error != "" {
			return nil, fmt.Errorf("master: %s", r.Error)
		}
		return r.Body, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no answer from the master: %w", ctx.Err())
	}
}

// deliverReply hands a master's reply to the request waiting for it.
func (s *Slave) deliverReply(r ship.Reply) {
	s.mu.Lock()
	ch := s.replies[r.ID]
	s.mu.Unlock()
	if ch != nil {
		ch <- r
	}
}
