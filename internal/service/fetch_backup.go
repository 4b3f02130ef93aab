package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/ship"
)

// FetchBackup asks the master, over the sync port, for a backup of its
// repository and writes it to w. The slave authenticates with sync.token
// like its service does; it needs no master database credentials.
func FetchBackup(ctx context.Context, cfg config.Config, w io.Writer) (int64, error) {
	connCfg, err := pgx.ParseConfig(cfg.Repository.URL)
	if err != nil {
		return 0, fmt.Errorf("repository.url: %w", err)
	}
	db, err := pgx.ConnectConfig(ctx, connCfg)
	if err != nil {
		return 0, fmt.Errorf("cannot connect to the slave repository (repository.url): %w", err)
	}
	identity, err := repositoryIdentity(ctx, db)
	db.Close(context.Background())
	if err != nil {
		return 0, err
	}
	tlsConf, err := ship.ClientTLSConfig(cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.CA, cfg.Master.Host)
	if err != nil {
		return 0, err
	}
	addr := net.JoinHostPort(cfg.Master.Host, strconv.Itoa(cfg.Master.Port))
	nc, err := ship.Dial(ctx, addr, tlsConf)
	if err != nil {
		return 0, fmt.Errorf("master sync service at %s is not reachable; start the master first: %w", addr, err)
	}
	defer nc.Close()
	welcome, err := ship.ClientHandshake(ctx, nc, ship.ClientOptions{
		Token: cfg.Sync.Token, Name: cfg.Node.Name, Identity: identity, Purpose: ship.PurposeBackup,
	})
	if err != nil {
		return 0, err
	}
	conn := ship.NewConn(nc, ship.ConnOptions{Heartbeat: welcome.Heartbeat, PeerMaxFrame: welcome.MaxFrame, Peer: "master at " + addr})
	const id = 1
	if err := conn.Send(ctx, ship.Request{ID: id, Kind: ship.RequestBackup}); err != nil {
		return 0, err
	}
	var n int64
	for {
		msg, err := conn.Receive(ctx)
		if err != nil {
			return n, fmt.Errorf("receive the backup from %s: %w", addr, err)
		}
		switch v := msg.(type) {
		case ship.Stream:
			if v.ID != id {
				return n, fmt.Errorf("master sent data for request %d", v.ID)
			}
			if _, err := w.Write(v.Data); err != nil {
				return n, err
			}
			n += int64(len(v.Data))
			if v.End {
				return n, nil
			}
		case ship.Reply:
			if v.Error != "" {
				return n, fmt.Errorf("master: %s", v.Error)
			}
			return n, errors.New("master ended the backup without data")
		}
	}
}
