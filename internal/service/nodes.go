package service

import (
	"fmt"
	"log/slog"

	"github.com/schedsync/schedsync/internal/config"
)

func init() { NewNode = newNode }

// newNode builds the master or slave node of cfg.Node.Role.
func newNode(cfg config.Config, log *slog.Logger) (Node, error) {
	switch cfg.Node.Role {
	case "master":
		return NewMaster(cfg, log)
	case "slave":
		return NewSlave(cfg, log)
	}
	return nil, fmt.Errorf("node.role %q is not master or slave", cfg.Node.Role)
}
