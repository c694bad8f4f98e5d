package devices

import (
	"errors"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRegisterCodecDecodeOrders(t *testing.T) {
	tests := []struct {
		typ, order string
		words      []uint16
		want       any
	}{
		{"int16", "", []uint16{0xFFFE}, int64(-2)},
		{"int16", "BA", []uint16{0xFEFF}, int64(-2)},
		{"uint16", "ABCD", []uint16{0xFFFE}, uint64(0xFFFE)},
		{"uint16", "DCBA", []uint16{0x0201}, uint64(0x0102)},
		{"uint32", "ABCD", []uint16{0x0102, 0x0304}, uint64(0x01020304)},
		{"uint32", "CDAB", []uint16{0x0304, 0x0102}, uint64(0x01020304)},
		{"uint32", "BADC", []uint16{0x0201, 0x0403}, uint64(0x01020304)},
		{"uint32", "DCBA", []uint16{0x0403, 0x0201}, uint64(0x01020304)},
		{"int32", "", []uint16{0xFFFF, 0xFFFF}, int64(-1)},
		{"int32", "CDAB", []uint16{0xFFFE, 0xFFFF}, int64(-2)},
		{"uint64", "ABCDEFGH", []uint16{0x0102, 0x0304, 0x0506, 0x0708}, uint64(0x0102030405060708)},
		{"uint64", "HGFEDCBA", []uint16{0x0807, 0x0605, 0x0403, 0x0201}, uint64(0x0102030405060708)},
		{"uint64", "BADCFEHG", []uint16{0x0201, 0x0403, 0x0605, 0x0807}, uint64(0x0102030405060708)},
		{"uint64", "GHEFCDAB", []uint16{0x0708, 0x0506, 0x0304, 0x0102}, uint64(0x0102030405060708)},
		{"uint64", "CDAB", []uint16{0x0708, 0x0506, 0x0304, 0x0102}, uint64(0x0102030405060708)},
		{"uint64", "DCBA", []uint16{0x0807, 0x0605, 0x0403, 0x0201}, uint64(0x0102030405060708)},
		{"int64", "", []uint16{0xFFFF, 0xFFFF, 0xFFFF, 0xFFFD}, int64(-3)},
		{"float32", "ABCD", []uint16{0x41AC, 0x0000}, 21.5},
		{"float32", "CDAB", []uint16{0x0000, 0x41AC}, 21.5},
		{"float32", "", []uint16{0x3DCC, 0xCCCD}, 0.1}, // shortest decimal, not 0.10000000149
		{"float64", "", []uint16{0x4035, 0x8000, 0, 0}, 21.5},
		{"float64", "GHEFCDAB", []uint16{0, 0, 0x8000, 0x4035}, 21.5},
		{"string", "", []uint16{0x4142, 0x4300}, "ABC"},
		{"string", "BA", []uint16{0x4241, 0x0043}, "ABC"},
		{"string", "", []uint16{0x4869, 0x2020}, "Hi"},
		{"string", "", []uint16{0xFF41, 0x0000}, "\uFFFDA"},
		{"bool", "", []uint16{0x0100}, true},
		{"bool", "", []uint16{0}, false},
	}
	for _, tt := range tests {
		t.Run(tt.typ+"/"+tt.order, func(t *testing.T) {
			length := 0
			if tt.typ == "string" {
				length = len(tt.words)
			}
			c, err := NewRegisterCodec(TableHolding, tt.typ, tt.order, length, 0)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Decode(tt.words)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decode(%04x) (-want +got):\n%s", tt.words, diff)
			}
			if tt.typ == "string" && tt.want == "\uFFFDA" {
				return
			}
			enc, err := c.Encode(got)
			if err != nil {
				t.Fatalf("Encode(%v): %v", got, err)
			}
			back, err := c.Decode(enc)
			if err != nil || !cmp.Equal(back, got) {
				t.Errorf("Decode(Encode(%v)) = %v, %v", got, back, err)
			}
		})
	}
}

func TestRegisterCodecBitsAndTables(t *testing.T) {
	c, err := NewRegisterCodec(TableInput, "bit", "", 0, 9)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		w    uint16
		want bool
	}{{0x0200, true}, {0xFDFF, false}} {
		if got, _ := c.Decode([]uint16{tt.w}); got != tt.want {
			t.Errorf("bit 9 of %04x = %v, want %v", tt.w, got, tt.want)
		}
	}
	if got := c.EncodeBit(0x00F0, true); got != 0x02F0 {
		t.Errorf("EncodeBit(0x00F0, true) = %04x", got)
	}
	if got := c.EncodeBit(0xFFFF, false); got != 0xFDFF {
		t.Errorf("EncodeBit(0xFFFF, false) = %04x", got)
	}
	coil, err := NewRegisterCodec(TableCoil, "bool", "", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if coil.Count() != 1 {
		t.Errorf("coil Count = %d", coil.Count())
	}
	if got, _ := coil.Decode([]uint16{1}); got != true {
		t.Errorf("coil decode = %v", got)
	}
	if w, err := coil.Encode(true); err != nil || w[0] != 1 {
		t.Errorf("coil Encode(true) = %v, %v", w, err)
	}
}

func TestRegisterCodecInvalid(t *testing.T) {
	tests := []struct {
		table, typ, order string
		length, bit       int
	}{
		{"holdings", "int16", "", 0, 0},
		{TableHolding, "int8", "", 0, 0},
		{TableHolding, "", "", 0, 0},
		{TableCoil, "int16", "", 0, 0},
		{TableHolding, "float32", "ABCDEFGH", 0, 0},
		{TableHolding, "float32", "AABC", 0, 0},
		{TableHolding, "float64", "ABC", 0, 0},
		{TableHolding, "int16", "ABC", 0, 0},
		{TableHolding, "string", "", 0, 0},
		{TableHolding, "string", "", 126, 0},
		{TableHolding, "bit", "", 0, 16},
		{TableHolding, "bit", "", 0, -1},
	}
	for _, tt := range tests {
		if _, err := NewRegisterCodec(tt.table, tt.typ, tt.order, tt.length, tt.bit); err == nil {
			t.Errorf("NewRegisterCodec(%q, %q, %q, %d, %d) accepted", tt.table, tt.typ, tt.order, tt.length, tt.bit)
		}
	}
}

func TestRegisterCodecNotFinite(t *testing.T) {
	c, _ := NewRegisterCodec(TableHolding, "float32", "", 0, 0)
	for _, words := range [][]uint16{{0x7FC0, 0}, {0x7F80, 0}, {0xFF80, 0}} {
		v, err := c.Decode(words)
		if !errors.Is(err, ErrNotFinite) {
			t.Errorf("Decode(%04x) err = %v, want ErrNotFinite", words, err)
		}
		if f, ok := v.(float64); !ok || !(math.IsNaN(f) || math.IsInf(f, 0)) {
			t.Errorf("Decode(%04x) value = %v", words, v)
		}
	}
	if _, err := c.Encode(math.NaN()); !errors.Is(err, ErrNotFinite) {
		t.Errorf("Encode(NaN) err = %v", err)
	}
	if _, err := c.Encode(1e39); err == nil {
		t.Error("Encode(1e39) into float32 accepted")
	}
}

func TestRegisterCodecEncodeRange(t *testing.T) {
	tests := []struct {
		typ string
		v   any
		ok  bool
	}{
		{"int16", int64(-32768), true},
		{"int16", int64(32768), false},
		{"uint16", int64(65535), true},
		{"uint16", uint64(65536), false},
		{"uint16", int64(-1), false},
		{"int32", float64(12), true},
		{"int32", 1.5, false},
		{"uint64", uint64(math.MaxUint64), true},
		{"int64", uint64(math.MaxUint64), false},
		{"float32", "x", false},
	}
	for _, tt := range tests {
		c, err := NewRegisterCodec(TableHolding, tt.typ, "", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Encode(tt.v)
		if (err == nil) != tt.ok {
			t.Errorf("%s Encode(%v) err = %v, want ok=%v", tt.typ, tt.v, err, tt.ok)
		}
	}
	s, _ := NewRegisterCodec(TableHolding, "string", "", 2, 0)
	if _, err := s.Encode("abcde"); err == nil {
		t.Error("5-byte string fit in 2 registers")
	}
}

var fuzzTypes = []string{"bool", "bit", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"}
var fuzzOrders = []string{"", "AB", "BA", "ABCD", "CDAB", "BADC", "DCBA", "ABCDEFGH", "HGFEDCBA", "BADCFEHG", "GHEFCDAB", "DCBAHGFE"}

// FuzzDecode decodes arbitrary register bytes with every type and order: it
// must never panic, and a decoded numeric value must encode back to the same
// registers.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{0x41, 0xAC, 0, 0, 0, 0, 0, 0}, uint8(8), uint8(3), uint8(3))
	f.Add([]byte{0x7F, 0xC0, 0, 0}, uint8(8), uint8(4), uint8(0))
	f.Add([]byte{0xFF, 0xFE}, uint8(2), uint8(2), uint8(15))
	f.Add([]byte("hello, w\x00rld"), uint8(10), uint8(0), uint8(0))
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8}, uint8(7), uint8(10), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, typ, order, bit uint8) {
		tp := fuzzTypes[int(typ)%len(fuzzTypes)]
		words := make([]uint16, len(data)/2)
		for i := range words {
			words[i] = uint16(data[2*i])<<8 | uint16(data[2*i+1])
		}
		c, err := NewRegisterCodec(TableHolding, tp, fuzzOrders[int(order)%len(fuzzOrders)], len(words), int(bit%16))
		if err != nil {
			return // invalid combination (order width, empty string)
		}
		if len(words) < c.Count() {
			if _, err := c.Decode(words); err == nil {
				t.Fatalf("Decode of %d registers for %s accepted", len(words), tp)
			}
			return
		}
		words = words[:c.Count()]
		v, err := c.Decode(words)
		if err != nil {
			if !errors.Is(err, ErrNotFinite) {
				t.Fatalf("Decode(%04x) as %s: %v", words, tp, err)
			}
			return
		}
		switch tp {
		case "bool", "bit", "string":
			return // not bijective: any non-zero is true; strings are trimmed
		}
		enc, err := c.Encode(v)
		if err != nil {
			t.Fatalf("Encode(%v) as %s: %v", v, tp, err)
		}
		if !cmp.Equal(enc, words) {
			t.Fatalf("%s %s: Encode(Decode(%04x)) = %04x", tp, c.Order, words, enc)
		}
	})
}
