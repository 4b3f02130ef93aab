package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/schedsync/schedsync/internal/service"
	"github.com/schedsync/schedsync/internal/testkit/pgtest"
	"github.com/schedsync/schedsync/internal/testkit/quartz"
)

const (
	// repoDB is the repository database's name on both clusters.
	repoDB = "scheduler"
	// catchUpTimeout bounds the wait for the slave.
	catchUpTimeout = 2 * time.Minute
	// caughtUpFor is how long the positions must stay equal: several
	// capture polls and heartbeats, so that nothing is still in flight.
	caughtUpFor = 1500 * time.Millisecond
)

// findBinary uses -bin, building it with go build when it is missing.
func (d *demo) findBinary(ctx context.Context) error {
	bin, err := filepath.Abs(d.opts.bin)
	if err != nil {
		return err
	}
	d.bin = bin
	if _, err := os.Stat(bin); err == nil {
		say("using %s", display(bin))
		return nil
	}
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return fmt.Errorf("%s is missing and no Go module is here to build it from: run make build, or pass -bin", bin)
	}
	fmt.Printf("    $ go build -o %s ./cmd/schedsync   (in %s)\n", display(bin), root)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/schedsync")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/schedsync: %w\n%s", err, out)
	}
	return nil
}

// startClusters starts the two clusters in parallel and creates the
// repository database in each.
func (d *demo) startClusters(ctx context.Context) error {
	var g errgroup.Group
	cs := make([]*pgtest.Cluster, 2)
	for i := range cs {
		g.Go(func() error {
			c, err := pgtest.Start(ctx, pgtest.Options{Keep: d.opts.keep})
			if err != nil {
				return err
			}
			cs[i] = c
			_, err = c.CreateDB(ctx, repoDB)
			return err
		})
	}
	err := g.Wait()
	d.masterDB, d.slaveDB = cs[0], cs[1] // cleanup stops whichever started
	if err != nil {
		return err
	}
	d.master = d.newNode("master", "master", d.masterDB.URL(repoDB))
	d.slave = d.newNode("slave", "slave", d.slaveDB.URL(repoDB))
	say("master repository: %s   (cluster in %s)", d.master.url, d.masterDB.Dir)
	say("slave repository:  %s   (cluster in %s)", d.slave.url, d.slaveDB.Dir)
	return nil
}

func (d *demo) createSchemas(ctx context.Context) error {
	for _, n := range []*node{d.master, d.slave} {
		conn, err := pgx.Connect(ctx, n.url)
		if err != nil {
			return fmt.Errorf("%s repository: %w", n.name, err)
		}
		err = quartz.CreateSchema(ctx, conn)
		_ = conn.Close(context.Background())
		if err != nil {
			return fmt.Errorf("%s repository: %w", n.name, err)
		}
	}
	say("%d tables in each: %s", len(quartz.Tables()), strings.Join(quartz.Tables(), ", "))
	return nil
}

// writeConfigs writes the shared token and both config files, after
// clearing what an earlier demo left in the directory.
func (d *demo) writeConfigs(ctx context.Context) error {
	if err := d.prepareDir(ctx); err != nil {
		return err
	}
	token := make([]byte, 24)
	_, _ = rand.Read(token)
	tokenFile := filepath.Join(d.dir, "token")
	if err := os.WriteFile(tokenFile, []byte(hex.EncodeToString(token)+"\n"), 0o600); err != nil {
		return err
	}
	say("%s: the secret both nodes share (mode 0600)", display(tokenFile))
	syncPort, slavePort := freePort(), freePort()
	if syncPort == 0 || slavePort == 0 {
		return errors.New("no free loopback port")
	}
	for _, n := range []*node{d.master, d.slave} {
		text := n.properties(syncPort, slavePort, tokenFile)
		if err := os.WriteFile(n.config, []byte(text), 0o600); err != nil {
			return err
		}
		say("%s:", display(n.config))
		indent(text)
	}
	return nil
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// prepareDir creates the demo directory, stopping a service an earlier,
// interrupted demo left running and removing its files. Only files the
// demo writes are removed: -dir may name a directory with other things.
func (d *demo) prepareDir(ctx context.Context) error {
	for _, n := range []*node{d.master, d.slave} {
		pid, running, err := service.Running(n.spool)
		if err != nil {
			return err
		}
		if running && pid > 0 {
			say("stopping the %s service an earlier demo left running (pid %d)", n.name, pid)
			if err := stopPid(ctx, n.spool, pid); err != nil {
				return err
			}
		}
	}
	if err := d.removeFiles(); err != nil {
		return err
	}
	return os.MkdirAll(d.dir, 0o755)
}

// stopPid stops a service whose config may be gone: SIGTERM, then waits
// for its pid lock to be released.
func stopPid(ctx context.Context, spool string, pid int) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop pid %d: %w", pid, err)
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		if _, running, _ := service.Running(spool); !running {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("the service with pid %d did not stop within a minute; kill it", pid)
}

// removeFiles removes what the demo writes in its directory, and the
// directory if that leaves it empty.
func (d *demo) removeFiles() error {
	var errs []error
	for _, name := range []string{"master", "slave", "master.properties", "slave.properties", "token"} {
		errs = append(errs, os.RemoveAll(filepath.Join(d.dir, name)))
	}
	if entries, err := os.ReadDir(d.dir); err == nil && len(entries) == 0 {
		errs = append(errs, os.Remove(d.dir))
	}
	return errors.Join(errs...)
}
