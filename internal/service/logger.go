package service

import (
	"io"
	"log/slog"

	"github.com/schedsync/schedsync/internal/config"
)

// NewLogger is the service's logger per log.level and log.format, writing
// to w. The components derive theirs with With("stage", ...). Nothing that
// logs through it may pass a secret: log a config only as cfg.Redacted().
func NewLogger(w io.Writer, c config.LogConfig) *slog.Logger {
	var level slog.Level
	switch c.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
