package devices

import (
	"fmt"
	"math"
)

// checkPlausible marks a reading outside its point's valid range as bad,
// counts it, and logs when the point leaves or re-enters the range.
func (r *runner) checkPlausible(ps *pointState, eng any, rd *Reading) {
	vr := ps.p.Config.Valid
	if vr == nil {
		return
	}
	f, ok := numeric(eng)
	if !ok {
		return
	}
	outside := math.IsNaN(f) || vr.Min != nil && f < *vr.Min || vr.Max != nil && f > *vr.Max
	r.mu.Lock()
	changed := outside != ps.outside
	ps.outside = outside
	r.mu.Unlock()
	if outside {
		rd.Quality = QualityBad
		r.stats.implausible.Add(1)
	}
	switch {
	case outside && changed:
		r.log.Warn("reading outside the point's valid range, published with quality bad: check table, address, type, order and scale",
			"point", ps.p.Name(), "value", eng, "valid", rangeText(vr))
	case changed:
		r.log.Info("reading within the valid range again", "point", ps.p.Name(), "value", eng)
	}
}

func numeric(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	}
	return 0, false
}

func rangeText(vr *ValidRange) string {
	lo, hi := "-inf", "+inf"
	if vr.Min != nil {
		lo = fmt.Sprintf("%g", *vr.Min)
	}
	if vr.Max != nil {
		hi = fmt.Sprintf("%g", *vr.Max)
	}
	return lo + ".." + hi
}
