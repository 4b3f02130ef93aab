package service

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/schedsync/schedsync/internal/config"
)

// hookTimeout bounds failover.promote_command and failover.demote_command.
const hookTimeout = 2 * time.Minute

// Hook events, passed to the command as SCHEDSYNC_EVENT.
const (
	HookPromote = "promote" // this node became master
	HookDemote  = "demote"  // this node starts as, or became, a slave
	HookFenced  = "fenced"  // this node learned it was replaced as master
)

// RunHook runs the failover hook of event (promote_command for
// HookPromote, demote_command otherwise) with `sh -c`, and returns its
// error with the end of its output. No command configured is no error.
// The command sees SCHEDSYNC_EVENT, SCHEDSYNC_ROLE, SCHEDSYNC_GENERATION
// and SCHEDSYNC_NODE.
func RunHook(ctx context.Context, cfg config.Config, log *slog.Logger, event string, role config.Role, generation uint64) error {
	command, key := cfg.Failover.DemoteCommand, "failover.demote_command"
	if event == HookPromote {
		command, key = cfg.Failover.PromoteCommand, "failover.promote_command"
	}
	if strings.TrimSpace(command) == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, hookTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(),
		"SCHEDSYNC_EVENT="+event,
		"SCHEDSYNC_ROLE="+string(role),
		fmt.Sprintf("SCHEDSYNC_GENERATION=%d", generation),
		"SCHEDSYNC_NODE="+cfg.Node.Name)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	text := strings.TrimSpace(tail(out.String(), 2000))
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %s", hookTimeout)
		}
		log.Error("failover hook failed", "key", key, "event", event, "err", err, "output", text)
		return fmt.Errorf("%s (%s) failed: %v; output: %q", key, event, err, text)
	}
	log.Info("failover hook ran", "key", key, "event", event, "took", time.Since(start).Round(time.Millisecond), "output", text)
	return nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
