package config

import (
	"fmt"
	"math"
	"math/big"
	"strings"
)

// Size is a number of bytes, written in the config with a unit (1GiB).
type Size int64

// Size units. The IEC units (KiB…) and the one-letter ones (K…) are powers
// of 1024; the SI units (KB…) are powers of 1000.
const (
	B   Size = 1
	KB  Size = 1000
	MB  Size = 1000 * KB
	GB  Size = 1000 * MB
	TB  Size = 1000 * GB
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
)

// sizeUnits maps a lower-case unit to its multiplier.
var sizeUnits = map[string]Size{
	"": B, "b": B,
	"kb": KB, "mb": MB, "gb": GB, "tb": TB,
	"kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB,
	"k": KiB, "m": MiB, "g": GiB, "t": TiB,
}

// SizeSyntax says what ParseSize accepts, for error messages.
const SizeSyntax = "use a size such as 64MiB, 1GiB, 1.5GiB or 1048576 (bytes); " +
	"units B, KB/MB/GB/TB (powers of 1000), KiB/MiB/GiB/TiB or K/M/G/T (powers of 1024), any case"

// ParseSize parses a byte count: a non-negative decimal number, optionally
// with a fraction, optionally followed by a unit (spaces allowed between).
// Units are case-insensitive: B; KB, MB, GB, TB are powers of 1000; KiB,
// MiB, GiB, TiB and the shorthands K, M, G, T are powers of 1024 (as in
// `-Xmx512m` and `dd bs=1M`). A fraction is allowed only with a unit larger
// than a byte and is rounded down to whole bytes (1.5KiB = 1536, 0.3KiB =
// 307). Signs, exponents and digit separators are rejected.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q", s, t[i:])
	}
	whole, frac, hasDot := strings.Cut(num, ".")
	if whole == "" || (hasDot && frac == "") || strings.Contains(frac, ".") {
		return 0, fmt.Errorf("invalid size %q: not a number", s)
	}
	if hasDot && mult == B {
		return 0, fmt.Errorf("invalid size %q: a fraction needs a unit larger than a byte", s)
	}
	// Exact rational arithmetic so that 1.1GB is 1100000000, not 1099999999.
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("invalid size %q: not a number", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(int64(mult)))
	n := new(big.Int).Quo(r.Num(), r.Denom())
	if !n.IsInt64() {
		return 0, fmt.Errorf("invalid size %q: larger than %d bytes", s, int64(math.MaxInt64))
	}
	return Size(n.Int64()), nil
}

// printUnits lists the units String may print; on a tie the binary unit
// wins because the defaults and the sizes operators think in (segments,
// memory) are binary.
var printUnits = []struct {
	size Size
	name string
}{
	{TiB, "TiB"}, {GiB, "GiB"}, {MiB, "MiB"}, {KiB, "KiB"},
	{TB, "TB"}, {GB, "GB"}, {MB, "MB"}, {KB, "KB"},
}

// String prints the size exactly, in the unit that gives the smallest whole
// number (1GiB, 512MB, 1536MiB, 1234567B); ParseSize reads it back to the
// same value.
func (s Size) String() string {
	if s < 0 {
		return fmt.Sprintf("%dB", int64(s))
	}
	if s == 0 {
		return "0B"
	}
	n, unit := int64(s), "B"
	for _, u := range printUnits {
		if s%u.size == 0 && int64(s/u.size) < n {
			n, unit = int64(s/u.size), u.name
		}
	}
	return fmt.Sprintf("%d%s", n, unit)
}

// Approx prints the size rounded for people, in binary units with up to one
// decimal (1.2GiB, 300KiB, 17B). Use it for backlogs and progress, not for
// values that must read back exactly.
func (s Size) Approx() string {
	for _, u := range printUnits[:4] {
		if s >= u.size {
			v := float64(s) / float64(u.size)
			if v >= 100 || s%u.size == 0 {
				return fmt.Sprintf("%.0f%s", v, u.name)
			}
			return fmt.Sprintf("%.1f%s", v, u.name)
		}
	}
	return fmt.Sprintf("%dB", int64(s))
}
