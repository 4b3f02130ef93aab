package service

import (
	"fmt"
	"log/slog"

	"github.com/schedsync/schedsync/internal/config"
)

// NewNode builds the master or slave node of cfg.Node.Role. log is the
// service's logger; the node derives one per component from it. o are
// this run's command-line settings.
func NewNode(cfg config.Config, log *slog.Logger, o NodeOptions) (Node, error) {
	switch cfg.Node.Role {
	case "master":
		return NewMaster(cfg, log, o)
	case "slave":
		return NewSlave(cfg, log, o)
	}
	return nil, fmt.Errorf("node.role %q is not master or slave", cfg.Node.Role)
}
