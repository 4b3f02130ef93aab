package quartz

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestJobDataLooksSerialized(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	sizes := map[int]bool{}
	for i := range 20 {
		b := jobData(r, "node", int64(i))
		if !bytes.HasPrefix(b, []byte{0xac, 0xed, 0x00, 0x05}) {
			t.Fatalf("no stream header: % x", b[:8])
		}
		for _, want := range []string{"org.quartz.JobDataMap", "java.util.HashMap", "java.lang.Long", "jobRunCount"} {
			if !bytes.Contains(b, []byte(want)) {
				t.Errorf("no %q in job data", want)
			}
		}
		sizes[len(b)] = true
	}
	if len(sizes) < 10 {
		t.Errorf("job data sizes hardly vary: %v", sizes)
	}
}
