package service

import (
	"log/slog"

	"github.com/klauspost/compress/zstd"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/spool"
)

// spoolOptions are the options of the spool in dir, master's or slave's,
// from the spool.* keys.
func spoolOptions(cfg config.Config, dir string, log *slog.Logger) spool.Options {
	return spool.Options{Dir: dir, SegmentSize: int64(cfg.Spool.SegmentSize), Level: compressionLevel(cfg.Spool.CompressionLevel), Logger: log}
}

// compressionLevel maps spool.compression_level to a zstd level.
func compressionLevel(name string) zstd.EncoderLevel {
	switch name {
	case "default":
		return zstd.SpeedDefault
	case "better":
		return zstd.SpeedBetterCompression
	case "best":
		return zstd.SpeedBestCompression
	}
	return zstd.SpeedFastest
}
