package pgtest

import (
	"context"
	"encoding/json"
	"os"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary a cluster owner that dies without Stop,
// for the leak tests: "die" leaves the cleanup to the watchdog,
// "die-no-watchdog" kills the watchdog first, leaving it to stale cleanup.
const (
	helperEnv     = "PGTEST_HELPER"
	helperKeepEnv = "PGTEST_HELPER_KEEP"
)

type helperReport struct {
	Dir  string
	Port int
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		runHelper(mode)
		return
	}
	Main(m)
}

func runHelper(mode string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Keep: os.Getenv(helperKeepEnv) != ""})
	if err != nil {
		panic(err)
	}
	if mode == "die-no-watchdog" {
		_ = c.dog.cmd.Process.Signal(syscall.SIGKILL)
		<-c.dog.done
	}
	_ = json.NewEncoder(os.Stdout).Encode(helperReport{Dir: c.Dir, Port: c.Port})
	// Exit without Stop, as a test binary that panics or times out does.
	os.Exit(0)
}
