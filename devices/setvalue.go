package devices

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxSetPayload bounds a write request's payload.
const maxSetPayload = 4096

// setValue is a parsed write request: exactly one of a bool, a number (kept
// as text so integers keep full precision) or a string.
type setValue struct {
	kind byte // 'b' bool, 'n' number, 's' string
	b    bool
	num  string
	f    float64
	s    string
}

func (v setValue) String() string {
	switch v.kind {
	case 'b':
		return strconv.FormatBool(v.b)
	case 'n':
		return v.num
	}
	return strconv.Quote(v.s)
}

// parseSetPayload parses the payload of `<point topic>/set`: a bare value
// (true, false, on, off, a number, or text) or a JSON object
// {"value": …}. JSON strings ("…") are accepted bare as well.
func parseSetPayload(p []byte) (setValue, error) {
	if len(p) > maxSetPayload {
		return setValue{}, fmt.Errorf("payload is %d bytes, limit %d", len(p), maxSetPayload)
	}
	if !utf8.Valid(p) {
		return setValue{}, errors.New("payload is not valid UTF-8")
	}
	s := strings.TrimSpace(string(p))
	if s == "" {
		return setValue{}, errors.New("empty payload")
	}
	if s[0] == '{' {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal([]byte(s), &obj); err != nil {
			return setValue{}, fmt.Errorf("payload is not a JSON object: %w", err)
		}
		raw, ok := obj["value"]
		if !ok {
			return setValue{}, errors.New(`JSON payload has no "value"`)
		}
		return parseJSONValue(raw)
	}
	if s[0] == '"' {
		return parseJSONValue([]byte(s))
	}
	switch strings.ToLower(s) {
	case "true", "on":
		return setValue{kind: 'b', b: true}, nil
	case "false", "off":
		return setValue{kind: 'b', b: false}, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return setValue{}, fmt.Errorf("%q is not a finite number", s)
		}
		return setValue{kind: 'n', num: s, f: f}, nil
	}
	return setValue{kind: 's', s: s}, nil
}

func parseJSONValue(raw json.RawMessage) (setValue, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return setValue{}, fmt.Errorf("bad JSON value: %w", err)
	}
	if dec.More() {
		return setValue{}, errors.New("trailing data after the JSON value")
	}
	switch x := v.(type) {
	case bool:
		return setValue{kind: 'b', b: x}, nil
	case json.Number:
		f, err := strconv.ParseFloat(x.String(), 64)
		if err != nil || math.IsInf(f, 0) {
			return setValue{}, fmt.Errorf("number %s is out of range", x)
		}
		return setValue{kind: 'n', num: x.String(), f: f}, nil
	case string:
		return setValue{kind: 's', s: x}, nil
	case nil:
		return setValue{}, errors.New("value is null")
	}
	return setValue{}, fmt.Errorf("value must be a bool, number or string, not %T", v)
}

// rawKind is what a point's raw value is, for the write conversion.
type rawKind struct {
	kind     byte // 'b' bool, 'i' signed, 'u' unsigned, 'f' float, 's' string
	min, max float64
	bytes    int // string capacity, 0 = unbounded
}

// kindOf derives the raw kind from the point's type (Modbus), its sim kind,
// the last value read, or failing all that the request itself.
func kindOf(c *PointConfig, last any, req setValue) rawKind {
	switch c.Type {
	case "bool", "bit":
		return rawKind{kind: 'b'}
	case "int16":
		return rawKind{kind: 'i', min: math.MinInt16, max: math.MaxInt16}
	case "uint16":
		return rawKind{kind: 'u', max: math.MaxUint16}
	case "int32":
		return rawKind{kind: 'i', min: math.MinInt32, max: math.MaxInt32}
	case "uint32":
		return rawKind{kind: 'u', max: math.MaxUint32}
	case "int64":
		return rawKind{kind: 'i', min: math.MinInt64, max: math.MaxInt64}
	case "uint64":
		return rawKind{kind: 'u', max: math.MaxUint64}
	case "float32":
		return rawKind{kind: 'f', min: -math.MaxFloat32, max: math.MaxFloat32}
	case "float64":
		return rawKind{kind: 'f', min: -math.MaxFloat64, max: math.MaxFloat64}
	case "string":
		return rawKind{kind: 's', bytes: 2 * c.Length}
	}
	if c.Sim == "toggle" || c.Table == "coil" || c.Table == "discrete" {
		return rawKind{kind: 'b'}
	}
	if c.Sim != "" {
		return rawKind{kind: 'f', min: -math.MaxFloat64, max: math.MaxFloat64}
	}
	switch last.(type) {
	case bool:
		return rawKind{kind: 'b'}
	case int64:
		return rawKind{kind: 'i', min: math.MinInt64, max: math.MaxInt64}
	case uint64:
		return rawKind{kind: 'u', max: math.MaxUint64}
	case float64:
		return rawKind{kind: 'f', min: -math.MaxFloat64, max: math.MaxFloat64}
	case string:
		return rawKind{kind: 's'}
	}
	switch req.kind {
	case 'b':
		return rawKind{kind: 'b'}
	case 's':
		return rawKind{kind: 's'}
	}
	return rawKind{kind: 'f', min: -math.MaxFloat64, max: math.MaxFloat64}
}

// toRaw validates a requested engineering value against the point (kind,
// min, max) and converts it to the raw value handed to WriteConn.Write:
// (value - offset) / scale, rounded to the nearest integer for integer
// registers.
func toRaw(c *PointConfig, k rawKind, v setValue) (any, error) {
	switch k.kind {
	case 'b':
		switch {
		case v.kind == 'b':
			return v.b, nil
		case v.kind == 'n' && (v.f == 0 || v.f == 1):
			return v.f == 1, nil
		}
		return nil, fmt.Errorf("%s is not a boolean (use true/false, on/off or 1/0)", v)
	case 's':
		s := v.s
		if v.kind != 's' {
			s = v.String()
		}
		if k.bytes > 0 && len(s) > k.bytes {
			return nil, fmt.Errorf("string of %d bytes does not fit in %d", len(s), k.bytes)
		}
		return s, nil
	}
	if v.kind != 'n' {
		return nil, fmt.Errorf("%s is not a number", v)
	}
	if c.Min != nil && v.f < *c.Min {
		return nil, fmt.Errorf("%s is below the minimum %g", v.num, *c.Min)
	}
	if c.Max != nil && v.f > *c.Max {
		return nil, fmt.Errorf("%s is above the maximum %g", v.num, *c.Max)
	}
	exact := c.Scale == nil && c.Offset == 0
	raw := v.f
	if !exact {
		scale := 1.0
		if c.Scale != nil {
			scale = *c.Scale
		}
		raw = (v.f - c.Offset) / scale
	}
	switch k.kind {
	case 'i':
		if exact {
			if n, err := strconv.ParseInt(v.num, 10, 64); err == nil {
				if float64(n) < k.min || float64(n) > k.max {
					return nil, fmt.Errorf("%s is out of the register's range", v.num)
				}
				return n, nil
			}
		}
		r := math.Round(raw)
		if r < k.min || r > k.max || r >= math.MaxInt64 {
			return nil, fmt.Errorf("%s is out of the register's range", v.num)
		}
		return int64(r), nil
	case 'u':
		if exact {
			if n, err := strconv.ParseUint(v.num, 10, 64); err == nil {
				if float64(n) > k.max {
					return nil, fmt.Errorf("%s is out of the register's range", v.num)
				}
				return n, nil
			}
		}
		r := math.Round(raw)
		if r < 0 || r > k.max || r >= math.MaxUint64 {
			return nil, fmt.Errorf("%s is out of the register's range", v.num)
		}
		return uint64(r), nil
	}
	if raw < k.min || raw > k.max || math.IsNaN(raw) {
		return nil, fmt.Errorf("%s is out of the register's range", v.num)
	}
	return raw, nil
}
