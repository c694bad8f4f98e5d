package buffer

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Size is an amount of bytes. In configuration it is written as a plain
// integer ("1024") or with a unit: binary "KiB", "MiB", "GiB", "TiB" (powers
// of 1024) or decimal "kB"/"KB", "MB", "GB", "TB" (powers of 1000); "B" is
// accepted as the unit of bytes. Units are case-insensitive.
type Size int64

// Common sizes.
const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
)

var sizeUnits = map[string]int64{
	"":    1,
	"b":   1,
	"k":   1000,
	"kb":  1000,
	"m":   1000 * 1000,
	"mb":  1000 * 1000,
	"g":   1000 * 1000 * 1000,
	"gb":  1000 * 1000 * 1000,
	"t":   1000 * 1000 * 1000 * 1000,
	"tb":  1000 * 1000 * 1000 * 1000,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
}

// ParseSize parses a size such as "256MiB", "1GiB", "500MB" or "1024".
// Fractions are allowed with a unit ("1.5GiB"); the result is truncated to
// whole bytes. Negative sizes are rejected.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" {
		return 0, fmt.Errorf("invalid size %q: want a number with an optional unit such as 256MiB, 500MB, 1024", s)
	}
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (use B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)", s, t[i:])
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > math.MaxInt64/mult {
			return 0, fmt.Errorf("invalid size %q: out of range", s)
		}
		return Size(n * mult), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: %w", s, err)
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: out of range", s)
	}
	return Size(v), nil
}

// UnmarshalText implements [encoding.TextUnmarshaler] (used by yaml.v3).
func (s *Size) UnmarshalText(text []byte) error {
	v, err := ParseSize(string(text))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText implements [encoding.TextMarshaler]; it writes the form String
// returns, which ParseSize reads back to the same value.
func (s Size) MarshalText() ([]byte, error) {
	return []byte(s.String()), nil
}

// String formats s with the largest binary unit that divides it exactly
// ("256MiB"), or as plain bytes ("1000").
func (s Size) String() string {
	for _, u := range []struct {
		name string
		v    int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s != 0 && int64(s)%u.v == 0 {
			return strconv.FormatInt(int64(s)/u.v, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10)
}
