// Command schedsync keeps a standby copy of a job scheduler's PostgreSQL
// repository in step with the live one. This package is the CLI of
// docs/DESIGN.md: one file per subcommand, the config loader (the only user of
// viper) and the mapping of errors to exit codes. It must never call
// os.Exit outside main, so every command can be tested in-process.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/grants"
	"github.com/schedsync/schedsync/internal/service"
)

// Set by the Makefile with -ldflags "-X main.version=... -X main.commit=...".
var version, commit = "dev", ""

// Exit codes of the CLI contract.
const (
	exitOK          = 0
	exitFailure     = 1 // a failure, or verify found a difference
	exitUsage       = 2 // bad command line or configuration
	exitNeedsResync = 3 // the master refused the slave for its backlog
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// exitError carries the exit code a command ends with. Commands return it
// (or a plain error, which means exitFailure); only main exits.
type exitError struct {
	code int
	err  error // nil when the command already said everything
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageError is a configuration or command-line problem: exit 2.
func usageError(err error) error { return &exitError{code: exitUsage, err: err} }

// app is the state one invocation of the CLI shares between its commands.
type app struct {
	stdout, stderr io.Writer
	configFlag     string // --config as given
	configPath     string // the file actually read, absolute; set by loadConfig

	// newNode builds the service's node in `start`; nil is the real
	// master or slave (service.NewNode). The lifecycle tests run the CLI
	// with a fake node (fakenode_test.go).
	newNode func(cfg config.Config, log *slog.Logger, o service.NodeOptions) (service.Node, error)
	// readyGrace is added to --wait for what the service does besides
	// retrying (recovering its spool, reading its repository), so that
	// the node's own error, which says what went wrong, normally arrives
	// first. The lifecycle tests, which give --wait as the whole budget,
	// set it to 0.
	readyGrace time.Duration
}

// newApp is the CLI as installed: the real node, the full readyGrace.
func newApp(stdout, stderr io.Writer) *app {
	return &app{stdout: stdout, stderr: stderr, readyGrace: time.Minute}
}

// run executes the CLI with args (without the program name) and returns the
// exit code. main and the in-process tests both go through it.
func run(args []string, stdout, stderr io.Writer) int {
	return newApp(stdout, stderr).run(args)
}

func (a *app) run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root := a.newRootCmd()
	root.SetArgs(args)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	where := "schedsync"
	if cmd != nil {
		where = cmd.CommandPath()
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		// Not from a command's RunE: cobra refused the command line.
		printError(a.stderr, where, err)
		fmt.Fprintf(a.stderr, "Run '%s --help' for usage.\n", where)
		return exitUsage
	}
	if ee.err != nil {
		printError(a.stderr, where, ee.err)
	}
	return ee.code
}

// printError writes one line per joined error, each prefixed with the
// command, so a config with three mistakes reports all three.
func printError(w io.Writer, where string, err error) {
	for line := range strings.SplitSeq(err.Error(), "\n") {
		fmt.Fprintf(w, "%s: %s\n", where, line)
	}
}

// action wraps a command body so that its plain errors exit 1; errors that
// cobra itself returns (bad flags, unknown commands) stay plain and exit 2.
func action(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := fn(cmd, args)
		if err == nil {
			return nil
		}
		var ee *exitError
		if errors.As(err, &ee) {
			return err
		}
		// Missing database privileges are a set-up mistake, like a
		// config one: the message lists the statements that fix it.
		var missing *grants.MissingError
		if errors.As(err, &missing) {
			return usageError(err)
		}
		return &exitError{code: exitFailure, err: err}
	}
}

// withConfig is action for the commands that need the node's config: it
// loads and validates it first, so a config mistake is reported the same
// way (exit 2) by every command.
func (a *app) withConfig(fn func(cmd *cobra.Command, cfg *config.Config, args []string) error) func(*cobra.Command, []string) error {
	return action(func(cmd *cobra.Command, args []string) error {
		cfg, err := a.loadConfig()
		if err != nil {
			return usageError(err)
		}
		return fn(cmd, cfg, args)
	})
}

// withNodeConfig is withConfig for the commands that act as the node is
// now: with the role (and a slave's master) persisted after a promote,
// switchover or fail-back in place of node.role's (service.Effective).
func (a *app) withNodeConfig(fn func(cmd *cobra.Command, cfg *config.Config, args []string) error) func(*cobra.Command, []string) error {
	return a.withConfig(func(cmd *cobra.Command, cfg *config.Config, args []string) error {
		eff, _, err := service.Effective(*cfg)
		if err != nil {
			return err
		}
		return fn(cmd, &eff, args)
	})
}
