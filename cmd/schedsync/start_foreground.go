package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/service"
	"github.com/schedsync/schedsync/ship"
)

// runForeground is `start --foreground`: the service itself, run by
// systemd, by an operator, or by a detached start (which passed a
// readiness pipe).
func (a *app) runForeground(ctx context.Context, cfg *config.Config, opts startOptions) error {
	pipe := takeReadyPipe()
	sd := newSDNotifier()
	logw, closeLog, err := a.serviceLogWriter(cfg, pipe != nil)
	if err != nil {
		return a.foregroundResult(err, pipe)
	}
	defer closeLog()
	log := service.NewLogger(logw, cfg.Log)
	stopProfile, err := startProfile()
	if err != nil {
		return a.foregroundResult(err, pipe)
	}
	defer stopProfile()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	force := make(chan struct{})
	stopSignals := watchSignals(cancel, force, log, sd)
	defer stopSignals()

	err = service.RunService(ctx, *cfg, service.Options{
		Log:        log,
		Wait:       opts.wait,
		ConfigPath: a.configPath,
		Force:      force,
		NewNode:    a.newNode,
		Version:    version,
		Ready: func() {
			pipe.ready()
			sd.notify("READY=1")
		},
	})
	return a.foregroundResult(err, pipe)
}

// serviceLogWriter is where the service logs: log.file if set, else
// stderr. A detached service's stderr already is its log file (the
// starting process opened it), which also catches panics.
func (a *app) serviceLogWriter(cfg *config.Config, detached bool) (io.Writer, func(), error) {
	if detached || cfg.Log.File == "" {
		return a.stderr, func() {}, nil
	}
	f, err := os.OpenFile(cfg.Log.File, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("open log file (log.file): %w", err)
	}
	return f, func() { f.Close() }, nil
}

// watchSignals cancels the service on the first SIGTERM or SIGINT and
// closes force on the second, so an operator can cut a slow stop short.
func watchSignals(cancel func(), force chan<- struct{}, log *slog.Logger, sd *sdNotifier) (stop func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-sigs:
			log.Info("stopping on signal; send it again to exit at once", "signal", sig.String())
			sd.notify("STOPPING=1")
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-sigs:
			log.Warn("exiting at once on a second signal", "signal", sig.String())
			close(force)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
	}
}

// foregroundResult maps the service's end to an exit code, and tells a
// detached start about it. A service that finds another one running is an
// error in the foreground (systemd's unit did not start it), but not for a
// detached start, whose contract is "already running: exit 0".
func (a *app) foregroundResult(err error, pipe *readyPipe) error {
	if err == nil {
		return nil // a detached start that is still waiting sees exit status 0
	}
	var running *service.AlreadyRunningError
	if errors.As(err, &running) {
		if pipe != nil {
			pipe.already(running.PID)
			return nil
		}
		return &exitError{code: exitFailure,
			err: fmt.Errorf("%w; stop it first (schedsync stop), or see schedsync status", err)}
	}
	code := exitFailure
	switch {
	case errors.Is(err, ship.ErrNeedsResync):
		code = exitNeedsResync
	case len(config.KeyErrors(err)) > 0:
		code = exitUsage
	}
	pipe.fail(code, err.Error())
	return &exitError{code: code, err: err}
}
