package apply

import "github.com/schedsync/schedsync/spool"

// SpoolLog reads a spool as apply's Log.
func SpoolLog(sp *spool.Spool) Log { return spoolLog{sp} }

type spoolLog struct{ sp *spool.Spool }

func (l spoolLog) NewReader(after uint64) (Reader, error) { return l.sp.NewReader(after) }

func (l spoolLog) DurablePosition() uint64 { return l.sp.DurablePosition() }
