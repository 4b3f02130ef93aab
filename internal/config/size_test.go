package config

import "testing"

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
	}{
		{"0", 0},
		{"1024", 1024},
		{"1024B", 1024},
		{"10KB", 10_000},
		{"10kb", 10_000},
		{"512MB", 512_000_000},
		{"1GB", 1_000_000_000},
		{"2TB", 2_000_000_000_000},
		{"64MiB", 64 << 20},
		{"64mib", 64 << 20},
		{"1GiB", 1 << 30},
		{"1TiB", 1 << 40},
		{"1KiB", 1024},
		{"1k", 1024},
		{"512M", 512 << 20},
		{"1G", 1 << 30},
		{"1t", 1 << 40},
		{"1.5GiB", 1536 << 20},
		{"1.1GB", 1_100_000_000},
		{"0.3KiB", 307}, // rounded down
		{" 64 MiB ", 64 << 20},
		{"8388608", 8 << 20},
		{"8191TiB", 8191 << 40},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseSizeRejects(t *testing.T) {
	for _, in := range []string{
		"", " ", "GiB", "-1", "+1", "1e9", "1_000", "1,000", "1.", ".5", "1.2.3",
		"1.5", "1.5B", "10 bytes", "1GX", "1 G B", "1PiB", "0x10",
		"9223372036854775808", "8388608TiB", "1 2",
	} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestSizeString(t *testing.T) {
	tests := []struct {
		in   Size
		want string
	}{
		{0, "0B"},
		{1, "1B"},
		{1023, "1023B"},
		{1024, "1KiB"},
		{1000, "1KB"},
		{1536 << 20, "1536MiB"},
		{1 << 30, "1GiB"},
		{64 << 20, "64MiB"},
		{512_000_000, "512MB"},
		{1_234_567, "1234567B"},
		{-5, "-5B"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
		}
		if tt.in < 0 {
			continue
		}
		back, err := ParseSize(tt.in.String())
		if err != nil || back != tt.in {
			t.Errorf("ParseSize(%q) = %d, %v; want it to read back %d", tt.in.String(), back, err, int64(tt.in))
		}
	}
}

func TestSizeApprox(t *testing.T) {
	tests := []struct {
		in   Size
		want string
	}{
		{17, "17B"},
		{1024, "1KiB"},
		{1_234_567, "1.2MiB"},
		{300 << 10, "300KiB"},
		{5 << 30, "5GiB"},
		{1536 << 20, "1.5GiB"},
	}
	for _, tt := range tests {
		if got := tt.in.Approx(); got != tt.want {
			t.Errorf("Size(%d).Approx() = %q, want %q", int64(tt.in), got, tt.want)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1GiB", "1.5k", "0", "64 MB", "9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d, negative", s, n)
		}
		if back, err := ParseSize(n.String()); err != nil || back != n {
			t.Fatalf("ParseSize(%q) = %d, but %q reads back as %d, %v", s, n, n.String(), back, err)
		}
	})
}
