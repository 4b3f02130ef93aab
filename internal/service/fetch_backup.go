package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/ship"
)

// notReadyPatience is how long FetchBackup retries a master that is not
// ready yet.
const notReadyPatience = 15 * time.Second

// FetchBackup asks the master, over the sync port, for a backup of its
// repository and writes it to w. The slave authenticates with sync.token
// like its service does; it needs no master database credentials. It
// returns the master's welcome with the size: its generation, and where
// its capture history forked from its old master's.
func FetchBackup(ctx context.Context, cfg config.Config, w io.Writer) (int64, ship.Welcome, error) {
	connCfg, err := RepositoryConnConfig(cfg.Repository.URL, "resync")
	if err != nil {
		return 0, ship.Welcome{}, err
	}
	db, err := pgx.ConnectConfig(ctx, connCfg)
	if err != nil {
		return 0, ship.Welcome{}, fmt.Errorf("cannot connect to the slave repository (repository.url): %w", err)
	}
	identity, err := repositoryIdentity(ctx, db)
	db.Close(context.Background())
	if err != nil {
		return 0, ship.Welcome{}, err
	}
	tlsConf, err := ship.ClientTLSConfig(cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.CA, cfg.Master.Host)
	if err != nil {
		return 0, ship.Welcome{}, err
	}
	addr := net.JoinHostPort(cfg.Master.Host, strconv.Itoa(cfg.Master.Port))
	st, _, err := LoadNodeState(cfg.Spool.Dir)
	if err != nil {
		return 0, ship.Welcome{}, err
	}
	hello := ship.ClientOptions{
		Token: cfg.Sync.Token, Name: cfg.Node.Name, Identity: identity, Purpose: ship.PurposeBackup,
		Generation: st.Generation,
	}
	// A master that has just started refuses until its capture reaches
	// the repository ("not ready"); a streaming slave retries, and so
	// does a resync, for a while, instead of failing a cron run.
	var nc net.Conn
	var welcome ship.Welcome
	deadline := time.Now().Add(notReadyPatience)
	for {
		if nc, err = ship.Dial(ctx, addr, tlsConf); err != nil {
			return 0, ship.Welcome{}, fmt.Errorf("master sync service at %s is not reachable; start the master first: %w", addr, err)
		}
		if welcome, err = ship.ClientHandshake(ctx, nc, hello); err == nil {
			break
		}
		nc.Close()
		if !errors.Is(err, ship.ErrNotReady) || time.Now().After(deadline) {
			return 0, ship.Welcome{}, err
		}
		select {
		case <-ctx.Done():
			return 0, ship.Welcome{}, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	defer nc.Close()
	if welcome.Generation < st.Generation && st.Role == config.RoleSlave {
		return 0, welcome, fmt.Errorf("%w: master %s at %s has generation %d, lower than generation %d, which this node has seen: it was replaced by a promotion; point master.host and master.port at the current master",
			ship.ErrFenced, welcome.Name, addr, welcome.Generation, st.Generation)
	}
	conn := ship.NewConn(nc, ship.ConnOptions{Heartbeat: welcome.Heartbeat, PeerMaxFrame: welcome.MaxFrame, Peer: "master at " + addr})
	const id = 1
	if err := conn.Send(ctx, ship.Request{ID: id, Kind: ship.RequestBackup}); err != nil {
		return 0, ship.Welcome{}, err
	}
	var n int64
	for {
		msg, err := conn.Receive(ctx)
		if err != nil {
			return n, welcome, fmt.Errorf("receive the backup from %s: %w", addr, err)
		}
		switch v := msg.(type) {
		case ship.Stream:
			if v.ID != id {
				return n, welcome, fmt.Errorf("master sent data for request %d", v.ID)
			}
			if _, err := w.Write(v.Data); err != nil {
				return n, welcome, err
			}
			n += int64(len(v.Data))
			if v.End {
				return n, welcome, nil
			}
		case ship.Reply:
			if v.Error != "" {
				return n, welcome, fmt.Errorf("master: %s", v.Error)
			}
			return n, welcome, errors.New("master ended the backup without data")
		}
	}
}
