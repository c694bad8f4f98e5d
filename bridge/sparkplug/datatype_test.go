package sparkplug

import (
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
)

func TestDataTypeFor(t *testing.T) {
	tests := []struct {
		typ     string
		scaled  bool
		want    DataType
		wantErr string
	}{
		{"bool", false, DataType_Boolean, ""},
		{"bit", false, DataType_Boolean, ""},
		{"bool", true, DataType_Boolean, ""}, // scale does not apply to bools
		{"string", false, DataType_String, ""},
		{"int16", false, DataType_Int16, ""},
		{"uint16", false, DataType_UInt16, ""},
		{"int32", false, DataType_Int32, ""},
		{"uint32", false, DataType_UInt32, ""},
		{"int64", false, DataType_Int64, ""},
		{"uint64", false, DataType_UInt64, ""},
		{"float32", false, DataType_Float, ""},
		{"float64", false, DataType_Double, ""},
		{"int16", true, DataType_Double, ""},
		{"uint16", true, DataType_Double, ""},
		{"int32", true, DataType_Double, ""},
		{"uint32", true, DataType_Double, ""},
		{"int64", true, DataType_Double, ""},
		{"uint64", true, DataType_Double, ""},
		{"float32", true, DataType_Double, ""},
		{"float64", true, DataType_Double, ""},
		{"", false, DataType_Unknown, "no type"},
		{"int8", false, DataType_Unknown, `"int8" has no Sparkplug datatype`},
	}
	for _, tt := range tests {
		got, err := DataTypeFor(tt.typ, tt.scaled)
		if got != tt.want || (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("DataTypeFor(%q, %v) = %v, %v; want %v, error containing %q", tt.typ, tt.scaled, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestDataTypeOf(t *testing.T) {
	tests := []struct {
		v    any
		want DataType
	}{
		{true, DataType_Boolean},
		{"x", DataType_String},
		{int8(1), DataType_Int8},
		{int16(1), DataType_Int16},
		{int32(1), DataType_Int32},
		{int64(1), DataType_Int64},
		{1, DataType_Int64},
		{uint8(1), DataType_UInt8},
		{uint16(1), DataType_UInt16},
		{uint32(1), DataType_UInt32},
		{uint64(1), DataType_UInt64},
		{uint(1), DataType_UInt64},
		{float32(1), DataType_Float},
		{1.5, DataType_Double},
	}
	for _, tt := range tests {
		if got, err := DataTypeOf(tt.v); got != tt.want || err != nil {
			t.Errorf("DataTypeOf(%T) = %v, %v; want %v", tt.v, got, err, tt.want)
		}
	}
	if _, err := DataTypeOf([]byte("x")); err == nil {
		t.Error("DataTypeOf([]byte) succeeded")
	}
}

func TestConvert(t *testing.T) {
	tests := []struct {
		name    string
		dt      DataType
		v       any
		want    any
		wantErr string
	}{
		{"bool", DataType_Boolean, true, true, ""},
		{"bool from number", DataType_Boolean, int64(1), nil, "wants a bool"},
		{"string", DataType_String, "on", "on", ""},
		{"text", DataType_Text, "on", "on", ""},
		{"string from number", DataType_String, 1.5, nil, "wants a string"},
		{"int16 min", DataType_Int16, int64(-32768), int64(-32768), ""},
		{"int16 below", DataType_Int16, int64(-32769), nil, "-32769 out of Int16 range"},
		{"int16 above", DataType_Int16, uint64(32768), nil, "32768 out of Int16 range"},
		{"int8", DataType_Int8, int64(-128), int64(-128), ""},
		{"int8 above", DataType_Int8, int64(128), nil, "out of Int8 range"},
		{"int32 from integral float", DataType_Int32, 21.0, int64(21), ""},
		{"int32 from fraction", DataType_Int32, 21.5, nil, "21.5 is not an integer"},
		{"int64 max", DataType_Int64, int64(math.MaxInt64), int64(math.MaxInt64), ""},
		{"int64 from huge uint", DataType_Int64, uint64(math.MaxUint64), nil, "out of Int64 range"},
		{"int64 from 2^63 float", DataType_Int64, math.Exp2(63), nil, "out of Int64 range"},
		{"uint16", DataType_UInt16, int64(65535), uint64(65535), ""},
		{"uint16 negative", DataType_UInt16, int64(-1), nil, "-1 out of UInt16 range"},
		{"uint16 above", DataType_UInt16, 65536.0, nil, "out of UInt16 range"},
		{"uint8", DataType_UInt8, uint8(255), uint64(255), ""},
		{"uint32 negative float", DataType_UInt32, -1.0, nil, "out of UInt32 range"},
		{"uint64 max", DataType_UInt64, uint64(math.MaxUint64), uint64(math.MaxUint64), ""},
		{"uint64 from 2^64 float", DataType_UInt64, math.Exp2(64), nil, "out of UInt64 range"},
		{"double from int", DataType_Double, int64(7), 7.0, ""},
		{"double NaN", DataType_Double, math.NaN(), nil, "not a finite number"},
		{"double Inf", DataType_Double, math.Inf(1), nil, "not a finite number"},
		{"float rounds to float32", DataType_Float, 0.1, float64(float32(0.1)), ""},
		{"float too large", DataType_Float, 1e39, nil, "out of Float range"},
		{"number from string", DataType_Double, "1", nil, "wants a number"},
		{"unsupported datatype", DataType_DateTime, int64(1), nil, "not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Convert(tt.dt, tt.v)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Convert error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Convert (-want +got):\n%s", diff)
			}
		})
	}
}

// Values travel in the specification's fields: Int8–Int32 sign-extended in
// the uint32 int_value, Int64 two's complement in long_value, unsigned
// types zero-extended; and they decode back to the canonical Go value.
func TestMetricValueEncoding(t *testing.T) {
	tests := []struct {
		name string
		dt   DataType
		v    any
		want *Payload_Metric
		back any
	}{
		{"int8 negative", DataType_Int8, int64(-1), &Payload_Metric{Value: &Payload_Metric_IntValue{IntValue: 0xFFFFFFFF}}, int64(-1)},
		{"int16 negative", DataType_Int16, int64(-5), &Payload_Metric{Value: &Payload_Metric_IntValue{IntValue: 0xFFFFFFFB}}, int64(-5)},
		{"int32 min", DataType_Int32, int64(math.MinInt32), &Payload_Metric{Value: &Payload_Metric_IntValue{IntValue: 0x80000000}}, int64(math.MinInt32)},
		{"int64 negative", DataType_Int64, int64(-2), &Payload_Metric{Value: &Payload_Metric_LongValue{LongValue: math.MaxUint64 - 1}}, int64(-2)},
		{"uint16", DataType_UInt16, uint64(65535), &Payload_Metric{Value: &Payload_Metric_IntValue{IntValue: 65535}}, uint64(65535)},
		{"uint32", DataType_UInt32, uint64(math.MaxUint32), &Payload_Metric{Value: &Payload_Metric_IntValue{IntValue: math.MaxUint32}}, uint64(math.MaxUint32)},
		{"uint64", DataType_UInt64, uint64(math.MaxUint64), &Payload_Metric{Value: &Payload_Metric_LongValue{LongValue: math.MaxUint64}}, uint64(math.MaxUint64)},
		{"float", DataType_Float, 21.5, &Payload_Metric{Value: &Payload_Metric_FloatValue{FloatValue: 21.5}}, 21.5},
		{"double", DataType_Double, 0.1, &Payload_Metric{Value: &Payload_Metric_DoubleValue{DoubleValue: 0.1}}, 0.1},
		{"boolean", DataType_Boolean, true, &Payload_Metric{Value: &Payload_Metric_BooleanValue{BooleanValue: true}}, true},
		{"string", DataType_String, "Kühlhaus", &Payload_Metric{Value: &Payload_Metric_StringValue{StringValue: "Kühlhaus"}}, "Kühlhaus"},
		{"null", DataType_Double, nil, &Payload_Metric{IsNull: ptr(true)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Payload_Metric
			if err := setValue(&m, tt.dt, tt.v); err != nil {
				t.Fatal(err)
			}
			tt.want.Datatype = ptr(uint32(tt.dt))
			if diff := cmp.Diff(tt.want, &m, protocmp.Transform()); diff != "" {
				t.Errorf("encoded metric (-want +got):\n%s", diff)
			}
			back, err := metricValue(&m, tt.dt)
			if tt.back == nil {
				if err == nil {
					t.Errorf("decoding a null value succeeded: %v", back)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.back, back); diff != "" {
				t.Errorf("decoded value (-want +got):\n%s", diff)
			}
		})
	}
}

// Narrow signed integers must arrive sign-extended; a zero-extended value
// is read as the (out of range) unsigned number it is, never guessed.
func TestMetricValueNarrowSigned(t *testing.T) {
	tests := []struct {
		dt      DataType
		u       uint32
		want    int64
		wantErr string
	}{
		{DataType_Int16, 0xFFFFFFFB, -5, ""},
		{DataType_Int8, 0xFFFFFF80, -128, ""},
		{DataType_Int16, 0x7FFF, 32767, ""},
		{DataType_Int16, 0xFFFB, 0, "65531 out of Int16 range"},
		{DataType_Int8, 0xFF, 0, "255 out of Int8 range"},
		{DataType_Int16, 0xFFFF7FFF, 0, "-32769 out of Int16 range"},
	}
	for _, tt := range tests {
		m := &Payload_Metric{Value: &Payload_Metric_IntValue{IntValue: tt.u}}
		got, err := metricValue(m, tt.dt)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("metricValue(%#x as %v) = %v, %v; want an error containing %q", tt.u, tt.dt, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("metricValue(%#x as %v) = %v, %v; want %d", tt.u, tt.dt, got, err, tt.want)
		}
	}
}
