package main

import (
	"context"
	"fmt"
	"os/exec"
	"time"

	"github.com/schedsync/schedsync/bench/benchkit"
)

// modeDecoding is the floor under logical capture: a pgoutput slot read
// by pg_recvlogical into /dev/null, with no schedsync. What it costs the
// master is the walsender's decoding, which any logical capture pays.
const modeDecoding = "decoding"

// decodingReader is pg_recvlogical reading a publication of every table.
type decodingReader struct {
	w   *world
	cmd *exec.Cmd
}

func startDecoding(ctx context.Context, w *world) (*decodingReader, error) {
	url := w.masterURL()
	// The slot cannot be created in a transaction that wrote.
	for _, sql := range []string{
		`CREATE PUBLICATION tpsbench_decoding FOR ALL TABLES; ALTER TABLE pgbench_history REPLICA IDENTITY FULL`,
		`SELECT pg_create_logical_replication_slot('tpsbench_decoding', 'pgoutput')`,
	} {
		if err := w.exec(ctx, url, sql); err != nil {
			return nil, fmt.Errorf("set up the decoding slot: %w", err)
		}
	}
	d := &decodingReader{w: w}
	d.cmd = exec.CommandContext(ctx, w.master.Bin("pg_recvlogical"), "-d", url, "--slot", "tpsbench_decoding", "--start",
		"-f", "/dev/null", "-o", "proto_version=1", "-o", "publication_names=tpsbench_decoding")
	d.cmd.Env = benchkit.CleanEnv()
	if err := d.cmd.Start(); err != nil {
		d.stop()
		return nil, fmt.Errorf("start pg_recvlogical: %w", err)
	}
	// Let it attach to the slot before the load starts.
	time.Sleep(500 * time.Millisecond)
	return d, nil
}

// stop ends pg_recvlogical and drops the slot and the publication.
func (d *decodingReader) stop() {
	if d.cmd != nil && d.cmd.Process != nil {
		_ = d.cmd.Process.Kill()
		_ = d.cmd.Wait()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		err := d.w.exec(ctx, d.w.masterURL(), `SELECT pg_drop_replication_slot('tpsbench_decoding')
			FROM pg_replication_slots WHERE slot_name = 'tpsbench_decoding'`)
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond) // the walsender releases the slot a moment after its client goes
	}
	_ = d.w.exec(ctx, d.w.masterURL(), `DROP PUBLICATION IF EXISTS tpsbench_decoding`)
}
