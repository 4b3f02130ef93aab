package capture

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// schedsync.meta holds what install recorded: the schema version, the
// capture mode, the slot's name, and the tables install set to REPLICA
// IDENTITY FULL (a list, one per line).

func setMeta(ctx context.Context, tx pgx.Tx, key, value string) error {
	_, err := tx.Exec(ctx, `INSERT INTO schedsync.meta (key, value) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, key, value)
	if err != nil {
		return fmt.Errorf("record %s in schedsync.meta: %w", key, err)
	}
	return nil
}

func getMeta(ctx context.Context, tx pgx.Tx, key string) (string, error) {
	var v *string
	if err := tx.QueryRow(ctx, `SELECT max(value) FROM schedsync.meta WHERE key = $1`, key).Scan(&v); err != nil {
		return "", fmt.Errorf("read %s from schedsync.meta: %w", key, err)
	}
	if v == nil {
		return "", nil
	}
	return *v, nil
}

// setMetaIfChanged writes a meta value only when it differs, so that a
// second install leaves the catalog and the table untouched.
func setMetaIfChanged(ctx context.Context, tx pgx.Tx, key, value string) error {
	have, err := getMeta(ctx, tx, key)
	if err != nil || have == value {
		return err
	}
	return setMeta(ctx, tx, key, value)
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
