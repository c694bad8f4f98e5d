package sparkplug

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// DataTypeFor returns the Sparkplug datatype of a device point from its
// configured type (the `type:` key of a point: bool, bit, int16, uint16,
// int32, uint32, int64, uint64, float32, float64, string) and whether the
// point has a scale or an offset. A scaled or offset number is published as
// a float64 engineering value, so it is a Double whatever its register
// type. An empty type (serial and sim points, which have none) is an error:
// use DataTypeOf on a value instead.
func DataTypeFor(pointType string, scaled bool) (DataType, error) {
	switch pointType {
	case "bool", "bit":
		return DataType_Boolean, nil
	case "string":
		return DataType_String, nil
	}
	if scaled {
		switch pointType {
		case "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64":
			return DataType_Double, nil
		}
	}
	switch pointType {
	case "int16":
		return DataType_Int16, nil
	case "uint16":
		return DataType_UInt16, nil
	case "int32":
		return DataType_Int32, nil
	case "uint32":
		return DataType_UInt32, nil
	case "int64":
		return DataType_Int64, nil
	case "uint64":
		return DataType_UInt64, nil
	case "float32":
		return DataType_Float, nil
	case "float64":
		return DataType_Double, nil
	case "":
		return DataType_Unknown, errors.New("point has no type")
	}
	return DataType_Unknown, fmt.Errorf("point type %q has no Sparkplug datatype", pointType)
}

// DataTypeOf returns the datatype of a value as the devices package
// publishes it (int64, uint64, float64, bool, string; the narrower Go
// integer and float types map to their Sparkplug equivalents).
func DataTypeOf(v any) (DataType, error) {
	switch v.(type) {
	case bool:
		return DataType_Boolean, nil
	case string:
		return DataType_String, nil
	case int8:
		return DataType_Int8, nil
	case int16:
		return DataType_Int16, nil
	case int32:
		return DataType_Int32, nil
	case int64, int:
		return DataType_Int64, nil
	case uint8:
		return DataType_UInt8, nil
	case uint16:
		return DataType_UInt16, nil
	case uint32:
		return DataType_UInt32, nil
	case uint64, uint:
		return DataType_UInt64, nil
	case float32:
		return DataType_Float, nil
	case float64:
		return DataType_Double, nil
	}
	return DataType_Unknown, fmt.Errorf("value of type %T has no Sparkplug datatype", v)
}

// supported reports whether this package encodes and decodes values of t.
func supported(t DataType) bool {
	switch t {
	case DataType_Int8, DataType_Int16, DataType_Int32, DataType_Int64,
		DataType_UInt8, DataType_UInt16, DataType_UInt32, DataType_UInt64,
		DataType_Float, DataType_Double, DataType_Boolean, DataType_String, DataType_Text:
		return true
	}
	return false
}

// intRange is the inclusive range of an integer datatype.
func intRange(t DataType) (minV int64, maxV uint64, ok bool) {
	switch t {
	case DataType_Int8:
		return math.MinInt8, math.MaxInt8, true
	case DataType_Int16:
		return math.MinInt16, math.MaxInt16, true
	case DataType_Int32:
		return math.MinInt32, math.MaxInt32, true
	case DataType_Int64:
		return math.MinInt64, math.MaxInt64, true
	case DataType_UInt8:
		return 0, math.MaxUint8, true
	case DataType_UInt16:
		return 0, math.MaxUint16, true
	case DataType_UInt32:
		return 0, math.MaxUint32, true
	case DataType_UInt64:
		return 0, math.MaxUint64, true
	}
	return 0, 0, false
}

// number is a numeric value in the widest exact form it came in.
type number struct {
	kind byte // 'i' int64, 'u' uint64, 'f' float64
	i    int64
	u    uint64
	f    float64
}

func numberOf(v any) (number, bool) {
	switch n := v.(type) {
	case int:
		return number{kind: 'i', i: int64(n)}, true
	case int8:
		return number{kind: 'i', i: int64(n)}, true
	case int16:
		return number{kind: 'i', i: int64(n)}, true
	case int32:
		return number{kind: 'i', i: int64(n)}, true
	case int64:
		return number{kind: 'i', i: n}, true
	case uint:
		return number{kind: 'u', u: uint64(n)}, true
	case uint8:
		return number{kind: 'u', u: uint64(n)}, true
	case uint16:
		return number{kind: 'u', u: uint64(n)}, true
	case uint32:
		return number{kind: 'u', u: uint64(n)}, true
	case uint64:
		return number{kind: 'u', u: n}, true
	case float32:
		return number{kind: 'f', f: float64(n)}, true
	case float64:
		return number{kind: 'f', f: n}, true
	}
	return number{}, false
}

func (n number) String() string {
	switch n.kind {
	case 'i':
		return strconv.FormatInt(n.i, 10)
	case 'u':
		return strconv.FormatUint(n.u, 10)
	}
	return strconv.FormatFloat(n.f, 'g', -1, 64)
}

// integer returns n as an integer of datatype t: the result is an int64
// for signed types and a uint64 for unsigned ones. Floats must be integral.
func (n number) integer(t DataType) (any, error) {
	minV, maxV, _ := intRange(t)
	signed := minV < 0
	switch n.kind {
	case 'f':
		if n.f != math.Trunc(n.f) || math.IsInf(n.f, 0) || math.IsNaN(n.f) {
			return nil, fmt.Errorf("%s is not an integer", n)
		}
		// 2^63 and 2^64 are exact float64 values; compare against them
		// rather than against the (rounded) integer limits.
		if signed {
			if n.f < float64(minV) || n.f >= math.Exp2(63) || n.f > float64(maxV) {
				return nil, fmt.Errorf("%s out of %s range", n, t)
			}
			return int64(n.f), nil
		}
		if n.f < 0 || n.f >= math.Exp2(64) || n.f > float64(maxV) {
			return nil, fmt.Errorf("%s out of %s range", n, t)
		}
		return uint64(n.f), nil
	case 'i':
		if n.i < minV || n.i >= 0 && uint64(n.i) > maxV {
			return nil, fmt.Errorf("%s out of %s range", n, t)
		}
		if signed {
			return n.i, nil
		}
		return uint64(n.i), nil
	default:
		if n.u > maxV {
			return nil, fmt.Errorf("%s out of %s range", n, t)
		}
		if signed {
			return int64(n.u), nil
		}
		return n.u, nil
	}
}

func (n number) float() float64 {
	switch n.kind {
	case 'i':
		return float64(n.i)
	case 'u':
		return float64(n.u)
	}
	return n.f
}

// Convert returns v as the canonical Go value of datatype t: bool for
// Boolean, string for String and Text, int64 for the signed integer types,
// uint64 for the unsigned ones, float64 for Float and Double. Numbers
// convert between kinds when the value fits (an integer datatype takes an
// integral float; a Float takes any finite value, rounded to float32
// precision); anything else is an error.
func Convert(t DataType, v any) (any, error) {
	switch t {
	case DataType_Boolean:
		if b, ok := v.(bool); ok {
			return b, nil
		}
		return nil, fmt.Errorf("%s wants a bool, got %T", t, v)
	case DataType_String, DataType_Text:
		if s, ok := v.(string); ok {
			return s, nil
		}
		return nil, fmt.Errorf("%s wants a string, got %T", t, v)
	}
	n, ok := numberOf(v)
	if !ok {
		return nil, fmt.Errorf("%s wants a number, got %T", t, v)
	}
	switch t {
	case DataType_Float, DataType_Double:
		f := n.float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%s is not a finite number", n)
		}
		if t == DataType_Float {
			if math.Abs(f) > math.MaxFloat32 {
				return nil, fmt.Errorf("%s out of Float range", n)
			}
			f = float64(float32(f))
		}
		return f, nil
	}
	if _, _, ok := intRange(t); ok {
		return n.integer(t)
	}
	return nil, fmt.Errorf("datatype %s is not supported", t)
}

// setValue stores v, converted to datatype t, in m (datatype, value; a nil
// v sets is_null).
func setValue(m *Payload_Metric, t DataType, v any) error {
	m.Datatype = ptr(uint32(t))
	if v == nil {
		m.IsNull = ptr(true)
		m.Value = nil
		return nil
	}
	c, err := Convert(t, v)
	if err != nil {
		return err
	}
	switch x := c.(type) {
	case bool:
		m.Value = &Payload_Metric_BooleanValue{BooleanValue: x}
	case string:
		m.Value = &Payload_Metric_StringValue{StringValue: x}
	case float64:
		if t == DataType_Float {
			m.Value = &Payload_Metric_FloatValue{FloatValue: float32(x)}
		} else {
			m.Value = &Payload_Metric_DoubleValue{DoubleValue: x}
		}
	case int64:
		// Int8, Int16 and Int32 travel in the uint32 int_value as two's
		// complement (sign-extended to 32 bits); Int64 in long_value.
		if t == DataType_Int64 {
			m.Value = &Payload_Metric_LongValue{LongValue: uint64(x)}
		} else {
			m.Value = &Payload_Metric_IntValue{IntValue: uint32(int32(x))}
		}
	case uint64:
		if t == DataType_UInt64 {
			m.Value = &Payload_Metric_LongValue{LongValue: x}
		} else {
			m.Value = &Payload_Metric_IntValue{IntValue: uint32(x)}
		}
	}
	return nil
}

// metricValue decodes the value of m as datatype t, returning the
// canonical Go value (see Convert). Signed integers narrower than 64 bits
// must be sign-extended to 32 bits, as the specification encodes them: a
// zero-extended 0xFFFB is 65531, out of Int16 range, not -5 (guessing
// would turn an out-of-range write into a wrong one).
func metricValue(m *Payload_Metric, t DataType) (any, error) {
	if m.GetIsNull() {
		return nil, errors.New("value is null")
	}
	switch v := m.Value.(type) {
	case nil:
		return nil, errors.New("metric has no value")
	case *Payload_Metric_BooleanValue:
		return Convert(t, v.BooleanValue)
	case *Payload_Metric_StringValue:
		return Convert(t, v.StringValue)
	case *Payload_Metric_FloatValue:
		return Convert(t, v.FloatValue)
	case *Payload_Metric_DoubleValue:
		return Convert(t, v.DoubleValue)
	case *Payload_Metric_IntValue:
		switch t {
		case DataType_Int8, DataType_Int16, DataType_Int32:
			return Convert(t, int32(v.IntValue))
		}
		return Convert(t, v.IntValue)
	case *Payload_Metric_LongValue:
		if t == DataType_Int64 {
			return int64(v.LongValue), nil
		}
		return Convert(t, v.LongValue)
	default:
		return nil, fmt.Errorf("unsupported value field %T", v)
	}
}

func ptr[T any](v T) *T { return &v }
