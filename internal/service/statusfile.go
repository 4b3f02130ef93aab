package service

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/schedsync/schedsync/internal/config"
	"github.com/schedsync/schedsync/internal/fsutil"
)

// StatusFileName is the file in spool.dir that keeps the last known status,
// so that `status` can show positions while the service is down, even
// after a kill -9.
const StatusFileName = "status.json"

// SaveStatus writes st to dir/status.json atomically: a reader sees the
// old file or the new one, never a mix, whatever happens to this process.
// Only the holder of the pid lock calls it, so the temporary name is fixed
// and a crash leaves at most one stray file, overwritten next time.
func SaveStatus(dir string, st Status) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("save status: %w", err)
	}
	data = append(data, '\n')
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, StatusFileName), data, 0o644); err != nil {
		return fmt.Errorf("save status: %w", err)
	}
	return nil
}

// LoadStatus reads dir/status.json. The error wraps fs.ErrNotExist if the
// service never ran there.
func LoadStatus(dir string) (Status, error) {
	path := filepath.Join(dir, StatusFileName)
	data, err := os.ReadFile(path)
	if err != nil {
		return Status{}, fmt.Errorf("read status file: %w", err)
	}
	var st Status
	if err := json.Unmarshal(data, &st); err != nil {
		return Status{}, fmt.Errorf("read status file %s: %w", path, err)
	}
	return st, nil
}

// terminalStates are the states a service records when it exits on an
// error; they stay visible while it is down, so that cron's
// `schedsync resync` can see a slave needs a re-sync.
var terminalStates = map[string]bool{
	StateNeedsResync: true,
	StateFailed:      true,
	StateApplyError:  true,
}

// LastKnownStatus is the status of a node whose service is not running:
// the last positions from dir/status.json with running=false, and state
// stopped unless the service recorded why it ended (needs_resync, failed,
// apply_error). Without a usable file (never started, or written under
// another role, whose positions mean something else) it is the role and
// name from the config at position 0. A file that cannot be read is
// reported as the error, together with that fallback status.
func LastKnownStatus(dir string, role config.Role, name string) (Status, error) {
	fresh := Status{Role: string(role), Name: name, State: StateStopped}
	st, err := LoadStatus(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fresh, nil
	}
	if err != nil {
		return fresh, err
	}
	if st.Role != string(role) {
		return fresh, nil
	}
	st.Running = false
	st.PID = 0
	if !terminalStates[st.State] {
		st.State = StateStopped
	}
	for i := range st.Slaves {
		st.Slaves[i].Connected = false
	}
	return st, nil
}
