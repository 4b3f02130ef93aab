package apply_test

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkApplyMillionRowTransaction applies one source transaction of
// 1M rows and reports the peak Go heap while it streams from the spool
// (the whole transaction is never held in memory) and the apply rate.
//
//	go test ./apply/ -run '^$' -bench MillionRow -benchtime 1x
func BenchmarkApplyMillionRowTransaction(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		r := newRig(b, `CREATE TABLE big (id int PRIMARY KEY, payload text, n bigint)`, false)
		r.Exec(r.MasterURL, `INSERT INTO big SELECT g, md5(g::text) || md5((g+1)::text), g * 7 FROM generate_series(1, 1000000) g`)
		r.Capture()
		runtime.GC()
		var peak atomic.Uint64
		stop := make(chan struct{})
		go func() {
			var ms runtime.MemStats
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
			}
		}()
		b.StartTimer()
		start := time.Now()
		r.ApplyAll()
		elapsed := time.Since(start)
		b.StopTimer()
		close(stop)
		r.RequireEqual()
		b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
		b.ReportMetric(1e6/elapsed.Seconds(), "rows/s")
	}
}
