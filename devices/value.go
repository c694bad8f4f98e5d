package devices

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// engineering converts a raw driver value into the published value:
// numbers become raw*scale + offset (scale defaults to 1); integers stay
// integers when the point has neither scale nor offset; bools and strings
// pass through. Non-finite results are errors (JSON cannot carry them and
// they are never a meaningful reading).
func engineering(raw any, c *PointConfig) (any, error) {
	var f float64
	switch v := raw.(type) {
	case bool:
		return v, nil
	case string:
		if !utf8.ValidString(v) {
			return nil, errors.New("string value is not valid UTF-8")
		}
		return v, nil
	case int64:
		if c.Scale == nil && c.Offset == 0 {
			return v, nil
		}
		f = float64(v)
	case uint64:
		if c.Scale == nil && c.Offset == 0 {
			return v, nil
		}
		f = float64(v)
	case int:
		return engineering(int64(v), c)
	case int32:
		return engineering(int64(v), c)
	case int16:
		return engineering(int64(v), c)
	case uint32:
		return engineering(uint64(v), c)
	case uint16:
		return engineering(uint64(v), c)
	case float32:
		return engineering(float64(v), c)
	case float64:
		f = v
	case nil:
		return nil, errors.New("driver returned no value")
	default:
		return nil, fmt.Errorf("driver returned unsupported value type %T", raw)
	}
	if c.Scale != nil || c.Offset != 0 {
		scale := 1.0
		if c.Scale != nil {
			scale = *c.Scale
		}
		f = roundSignificant(f*scale + c.Offset)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("value %v is not a finite number", f)
	}
	return f, nil
}

// roundSignificant drops binary noise from scaled values (215*0.1 =
// 21.500000000000004 becomes 21.5) by rounding to 12 significant digits.
func roundSignificant(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return f
	}
	r, err := strconv.ParseFloat(strconv.FormatFloat(f, 'g', 12, 64), 64)
	if err != nil {
		return f
	}
	return r
}

// asFloat returns numeric values as float64.
func asFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

// changedEnough reports whether cur should be published after last. A point
// with neither a deadband nor a heartbeat publishes every reading, so a
// subscriber that arrives late sees a steady value at the next poll. Otherwise
// it reports by exception: numbers need |Δ| > 0 and |Δ| ≥ deadband and
// |Δ| ≥ deadband_percent·|last|/100 (every configured band must be
// exceeded), other values any change, and the heartbeat re-publishes
// unchanged values.
// heartbeat is the point's heartbeat, 0 (never) when unset.
func (c *PointConfig) heartbeat() time.Duration {
	if c.Heartbeat == nil {
		return 0
	}
	return *c.Heartbeat
}

func changedEnough(last, cur any, c *PointConfig) bool {
	if last == nil || c.Deadband == 0 && c.DeadbandPercent == 0 && c.heartbeat() == 0 {
		return true
	}
	lf, lok := asFloat(last)
	cf, cok := asFloat(cur)
	if !lok || !cok {
		return last != cur
	}
	d := math.Abs(cf - lf)
	if d == 0 {
		return false
	}
	if c.Deadband > 0 && d < c.Deadband {
		return false
	}
	if c.DeadbandPercent > 0 && d < math.Abs(lf)*c.DeadbandPercent/100 {
		return false
	}
	return true
}

// tsFormat is RFC 3339 in UTC with milliseconds.
const tsFormat = "2006-01-02T15:04:05.000Z"

func formatTS(t time.Time) string { return t.UTC().Format(tsFormat) }

// valueText renders a published value for `payload: value`.
func valueText(v any) string {
	switch x := v.(type) {
	case bool:
		return strconv.FormatBool(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case float64:
		return string(formatFloat(x))
	case string:
		return x
	}
	return fmt.Sprint(v)
}

// formatFloat renders f as encoding/json does: shortest representation,
// plain decimals unless the exponent is below -6 or at least 21.
func formatFloat(f float64) []byte {
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		return strconv.AppendFloat(nil, f, 'e', -1, 64)
	}
	return strconv.AppendFloat(nil, f, 'f', -1, 64)
}

// valueJSON renders a published value as a JSON value.
func valueJSON(v any) []byte {
	switch x := v.(type) {
	case float64:
		return formatFloat(x)
	case string:
		b, _ := json.Marshal(x)
		return b
	}
	return []byte(valueText(v))
}

// valuePayload is the payload of a good (or uncertain) sample.
func valuePayload(format string, v any, unit string, ts time.Time, q Quality) []byte {
	if format == "value" {
		return []byte(valueText(v))
	}
	var b bytes.Buffer
	b.WriteString(`{"value":`)
	b.Write(valueJSON(v))
	if unit != "" {
		b.WriteString(`,"unit":`)
		b.Write(valueJSON(unit))
	}
	b.WriteString(`,"ts":"`)
	b.WriteString(formatTS(ts))
	b.WriteByte('"')
	if q != QualityGood {
		b.WriteString(`,"quality":"`)
		b.WriteString(q.String())
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.Bytes()
}

// badPayload is published (json payloads only) once when a point's read
// starts failing: it carries no value, so nobody can mistake it for a
// sample (G6).
func badPayload(unit string, ts time.Time, err error) []byte {
	var b bytes.Buffer
	b.WriteString(`{"quality":"bad"`)
	if unit != "" {
		b.WriteString(`,"unit":`)
		b.Write(valueJSON(unit))
	}
	b.WriteString(`,"ts":"`)
	b.WriteString(formatTS(ts))
	b.WriteString(`","error":`)
	b.Write(valueJSON(strings.ToValidUTF8(err.Error(), "\uFFFD")))
	b.WriteByte('}')
	return b.Bytes()
}

// resultPayload is the answer to a write request.
func resultPayload(v any, err error) []byte {
	if err != nil {
		return []byte(`{"ok":false,"error":` + string(valueJSON(strings.ToValidUTF8(err.Error(), "\uFFFD"))) + `}`)
	}
	return []byte(`{"ok":true,"value":` + string(valueJSON(v)) + `}`)
}
