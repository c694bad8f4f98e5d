package devices

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Modbus tables (the `table:` key of a point).
const (
	TableHolding  = "holding"  // 4x, read FC3, write FC6/FC16
	TableInput    = "input"    // 3x, read FC4, read-only
	TableCoil     = "coil"     // 0x, read FC1, write FC5/FC15
	TableDiscrete = "discrete" // 1x, read FC2, read-only
)

// ErrNotFinite is returned (wrapped) by RegisterCodec.Decode for a float
// that is NaN or ±Inf, and by Encode when asked to write one.
//
// Many devices use NaN as "no reading" (sensor fault, not yet measured), and
// neither NaN nor Inf can be published as JSON, so a non-finite float is a
// failed read of the point (published as unavailable, G6), not a value.
// Decode still returns the float64 NaN/±Inf alongside the error so that
// diagnostics (probe) can show it.
var ErrNotFinite = errors.New("float is NaN or infinite")

// IsBitTable reports whether table is addressed in bits (coil, discrete).
func IsBitTable(table string) bool { return table == TableCoil || table == TableDiscrete }

// IsRegisterTable reports whether table is addressed in 16-bit registers.
func IsRegisterTable(table string) bool { return table == TableHolding || table == TableInput }

// RegisterTypeWidth is the number of 16-bit registers a value of type typ
// occupies in a register table, or 0 for an unknown type and for "string"
// (whose width is the point's `length`).
func RegisterTypeWidth(typ string) int {
	switch typ {
	case "bool", "bit", "int16", "uint16":
		return 1
	case "int32", "uint32", "float32":
		return 2
	case "int64", "uint64", "float64":
		return 4
	}
	return 0
}

// RegisterValueKind says which Go type Decode returns (and Encode accepts
// best) for a point type: "bool" (bool, bit), "int" (int16/32/64 → int64),
// "uint" (uint16/32/64 → uint64), "float" (float32/64 → float64) or
// "string". It returns "" for an unknown type.
func RegisterValueKind(typ string) string {
	switch typ {
	case "bool", "bit":
		return "bool"
	case "int16", "int32", "int64":
		return "int"
	case "uint16", "uint32", "uint64":
		return "uint"
	case "float32", "float64":
		return "float"
	case "string":
		return "string"
	}
	return ""
}

// RegisterCodec converts between the registers (or bit) of one point and its
// raw value. It is immutable and safe for concurrent use.
//
// Byte order: every register travels as two bytes, high byte first. Order
// names the value's bytes in the order they appear on the wire, "A" being the
// most significant byte: ABCD is big-endian, DCBA little-endian, CDAB
// big-endian bytes in little-endian word order ("word swap"), BADC byte
// swap within each word. Any permutation of the right length is accepted:
// AB/BA for 16-bit types, 4 letters for 32-bit types, 8 letters for 64-bit
// types (ABCDEFGH, HGFEDCBA, BADCFEHG, GHEFCDAB…). For convenience the
// 4-letter names also apply to the other widths: for 16-bit types, bool,
// bit and string ABCD/CDAB mean AB and BADC/DCBA mean BA (bytes swapped
// within each register); for 64-bit types ABCD, CDAB, BADC and DCBA mean
// ABCDEFGH, GHEFCDAB, BADCFEHG and HGFEDCBA. The empty order is ABCD.
//
// Values: bool and bit decode to bool (a register bool is true when the
// register is non-zero; bit N is bit N of the register, 0 = least
// significant); signed types to int64, unsigned types to uint64, floats to
// float64 (float32 is converted through its shortest decimal form, so a
// register pair holding 21.1f decodes to 21.1, not 21.100000381…), strings
// to string (cut at the first NUL, trailing spaces trimmed, invalid UTF-8
// replaced by U+FFFD). NaN and ±Inf: see ErrNotFinite.
type RegisterCodec struct {
	Table  string
	Type   string
	Order  string // normalised: "AB"/"BA" or the full permutation for the width
	Length int    // registers, for strings
	Bit    int    // for type bit

	perm []int // wire byte i is value byte perm[i] (0 = most significant)
}

// NewRegisterCodec builds the codec for a point of the given table, type,
// order, string length (registers) and bit number. It returns an error that
// names the offending key when the combination is invalid.
func NewRegisterCodec(table, typ, order string, length, bit int) (*RegisterCodec, error) {
	c := &RegisterCodec{Table: table, Type: typ, Length: length, Bit: bit}
	switch {
	case IsBitTable(table):
		if typ != "bool" && typ != "" {
			return nil, fmt.Errorf("type: %q is not valid for table %s (only bool)", typ, table)
		}
		c.Type = "bool"
		return c, nil
	case IsRegisterTable(table):
	default:
		return nil, fmt.Errorf("table: %q is not one of holding, input, coil, discrete", table)
	}
	width := RegisterTypeWidth(typ)
	switch typ {
	case "string":
		if length < 1 || length > 125 {
			return nil, fmt.Errorf("length: string needs a length of 1-125 registers, got %d", length)
		}
		width = 1
	case "bit":
		if bit < 0 || bit > 15 {
			return nil, fmt.Errorf("bit: %d is not in 0-15", bit)
		}
	case "":
		return nil, errors.New("type: missing")
	default:
		if width == 0 {
			return nil, fmt.Errorf("type: %q is not one of bool, int16, uint16, int32, uint32, int64, uint64, float32, float64, string, bit", typ)
		}
	}
	norm, err := normaliseOrder(order, width*2)
	if err != nil {
		return nil, fmt.Errorf("order: %w", err)
	}
	c.Order = norm
	c.perm = make([]int, len(norm))
	for i := range norm {
		c.perm[i] = int(norm[i] - 'A')
	}
	return c, nil
}

var (
	orders16 = map[string]string{"": "AB", "AB": "AB", "BA": "BA", "ABCD": "AB", "CDAB": "AB", "BADC": "BA", "DCBA": "BA"}
	orders64 = map[string]string{"": "ABCDEFGH", "ABCD": "ABCDEFGH", "CDAB": "GHEFCDAB", "BADC": "BADCFEHG", "DCBA": "HGFEDCBA"}
)

// normaliseOrder maps order to a permutation of the first n letters.
func normaliseOrder(order string, n int) (string, error) {
	order = strings.ToUpper(order)
	switch n {
	case 2:
		if o, ok := orders16[order]; ok {
			return o, nil
		}
		return "", fmt.Errorf("%q is not valid for a 16-bit value (AB, BA, ABCD, CDAB, BADC, DCBA)", order)
	case 8:
		if o, ok := orders64[order]; ok {
			return o, nil
		}
	case 4:
		if order == "" {
			return "ABCD", nil
		}
	}
	if len(order) != n {
		return "", fmt.Errorf("%q is not valid for a %d-bit value (a permutation of %d letters A-%c)", order, n*8, n, 'A'+n-1)
	}
	var seen [8]bool
	for i := 0; i < n; i++ {
		k := int(order[i]) - 'A'
		if k < 0 || k >= n || seen[k] {
			return "", fmt.Errorf("%q is not valid for a %d-bit value (a permutation of %d letters A-%c)", order, n*8, n, 'A'+n-1)
		}
		seen[k] = true
	}
	return order, nil
}

// Count is the number of registers (register tables) or bits (bit tables)
// the point occupies.
func (c *RegisterCodec) Count() int {
	switch {
	case IsBitTable(c.Table):
		return 1
	case c.Type == "string":
		return c.Length
	}
	return RegisterTypeWidth(c.Type)
}

// Decode returns the raw value held in words, which must have exactly
// Count() elements. For bit tables words[0] is the bit (0 or 1).
func (c *RegisterCodec) Decode(words []uint16) (any, error) {
	if len(words) != c.Count() {
		return nil, fmt.Errorf("decode %s: got %d registers, want %d", c.Type, len(words), c.Count())
	}
	if IsBitTable(c.Table) {
		return words[0] != 0, nil
	}
	switch c.Type {
	case "bool":
		return words[0] != 0, nil
	case "bit":
		return c.reorder16(words[0])>>uint(c.Bit)&1 == 1, nil
	case "string":
		b := make([]byte, 0, 2*len(words))
		for _, w := range words {
			w = c.reorder16(w)
			b = append(b, byte(w>>8), byte(w))
		}
		if i := strings.IndexByte(string(b), 0); i >= 0 {
			b = b[:i]
		}
		s := strings.TrimRight(string(b), " ")
		if !utf8.ValidString(s) {
			s = strings.ToValidUTF8(s, "\uFFFD")
		}
		return s, nil
	}
	var wire [8]byte
	for i, w := range words {
		binary.BigEndian.PutUint16(wire[2*i:], w)
	}
	var v [8]byte
	for i, k := range c.perm {
		v[k] = wire[i]
	}
	switch c.Type {
	case "int16":
		return int64(int16(binary.BigEndian.Uint16(v[:]))), nil
	case "uint16":
		return uint64(binary.BigEndian.Uint16(v[:])), nil
	case "int32":
		return int64(int32(binary.BigEndian.Uint32(v[:]))), nil
	case "uint32":
		return uint64(binary.BigEndian.Uint32(v[:])), nil
	case "int64":
		return int64(binary.BigEndian.Uint64(v[:])), nil
	case "uint64":
		return binary.BigEndian.Uint64(v[:]), nil
	case "float32":
		f32 := math.Float32frombits(binary.BigEndian.Uint32(v[:]))
		f := float64(f32)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return f, fmt.Errorf("decode float32: %w", ErrNotFinite)
		}
		// The shortest decimal that round-trips to f32, as float64.
		f, _ = strconv.ParseFloat(strconv.FormatFloat(f, 'g', -1, 32), 64)
		return f, nil
	case "float64":
		f := math.Float64frombits(binary.BigEndian.Uint64(v[:]))
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return f, fmt.Errorf("decode float64: %w", ErrNotFinite)
		}
		return f, nil
	}
	return nil, fmt.Errorf("decode: unknown type %q", c.Type)
}

// reorder16 applies a 16-bit order (AB or BA) to one register.
func (c *RegisterCodec) reorder16(w uint16) uint16 {
	if c.Order == "BA" {
		return w<<8 | w>>8
	}
	return w
}

// Encode returns the registers (for bit tables: one element, 0 or 1) that
// hold v. v is bool, int64, uint64, float64 or string (int and float32 are
// accepted too); integers must fit the type, floats written to integer types
// must be integral, NaN/Inf are rejected (ErrNotFinite), strings must fit in
// Length registers (shorter strings are padded with NUL). For type bit,
// Encode returns the register with only the point's bit set or cleared:
// use EncodeBit for a read-modify-write.
func (c *RegisterCodec) Encode(v any) ([]uint16, error) {
	if IsBitTable(c.Table) || c.Type == "bool" || c.Type == "bit" {
		b, err := toBool(v)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", c.Type, err)
		}
		if c.Type == "bit" {
			return []uint16{c.EncodeBit(0, b)}, nil
		}
		if b {
			return []uint16{1}, nil
		}
		return []uint16{0}, nil
	}
	switch c.Type {
	case "string":
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("encode string: got %T", v)
		}
		if len(s) > 2*c.Length {
			return nil, fmt.Errorf("encode string: %d bytes do not fit in %d registers", len(s), c.Length)
		}
		b := make([]byte, 2*c.Length)
		copy(b, s)
		words := make([]uint16, c.Length)
		for i := range words {
			words[i] = c.reorder16(binary.BigEndian.Uint16(b[2*i:]))
		}
		return words, nil
	}
	var v8 [8]byte
	n := 2 * RegisterTypeWidth(c.Type)
	switch c.Type {
	case "float32", "float64":
		f, err := toFloat(v)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", c.Type, err)
		}
		if c.Type == "float32" {
			f32 := float32(f) // rounds to nearest; beyond the float32 range: ±Inf
			if math.IsInf(float64(f32), 0) {
				return nil, fmt.Errorf("encode float32: %g out of range", f)
			}
			binary.BigEndian.PutUint32(v8[:], math.Float32bits(f32))
		} else {
			binary.BigEndian.PutUint64(v8[:], math.Float64bits(f))
		}
	case "int16", "int32", "int64":
		i, err := toInt(v)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", c.Type, err)
		}
		bits := uint(8 * n)
		if bits < 64 && (i < -1<<(bits-1) || i > 1<<(bits-1)-1) {
			return nil, fmt.Errorf("encode %s: %d out of range", c.Type, i)
		}
		binary.BigEndian.PutUint64(v8[:], uint64(i)<<(64-bits))
	case "uint16", "uint32", "uint64":
		u, err := toUint(v)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", c.Type, err)
		}
		bits := uint(8 * n)
		if bits < 64 && u >= 1<<bits {
			return nil, fmt.Errorf("encode %s: %d out of range", c.Type, u)
		}
		binary.BigEndian.PutUint64(v8[:], u<<(64-bits))
	default:
		return nil, fmt.Errorf("encode: unknown type %q", c.Type)
	}
	var wire [8]byte
	for i, k := range c.perm {
		wire[i] = v8[k]
	}
	words := make([]uint16, n/2)
	for i := range words {
		words[i] = binary.BigEndian.Uint16(wire[2*i:])
	}
	return words, nil
}

// EncodeBit returns register cur (as read from the device) with the point's
// bit set to b, for type bit.
func (c *RegisterCodec) EncodeBit(cur uint16, b bool) uint16 {
	v := c.reorder16(cur)
	if b {
		v |= 1 << uint(c.Bit)
	} else {
		v &^= 1 << uint(c.Bit)
	}
	return c.reorder16(v)
}

func toBool(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case int64:
		return x != 0, nil
	case uint64:
		return x != 0, nil
	case int:
		return x != 0, nil
	case float64:
		if math.IsNaN(x) {
			return false, ErrNotFinite
		}
		return x != 0, nil
	}
	return false, fmt.Errorf("cannot write %T as bool", v)
}

func toFloat(v any) (float64, error) {
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case float32:
		f = float64(x)
	case int64:
		f = float64(x)
	case uint64:
		f = float64(x)
	case int:
		f = float64(x)
	default:
		return 0, fmt.Errorf("cannot write %T as float", v)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, ErrNotFinite
	}
	return f, nil
}

func toInt(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case int:
		return int64(x), nil
	case uint64:
		if x > math.MaxInt64 {
			return 0, fmt.Errorf("%d out of range", x)
		}
		return int64(x), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return 0, ErrNotFinite
		}
		if x != math.Trunc(x) || x < math.MinInt64 || x >= math.MaxInt64 {
			return 0, fmt.Errorf("%g is not an integer in range", x)
		}
		return int64(x), nil
	}
	return 0, fmt.Errorf("cannot write %T as integer", v)
}

func toUint(v any) (uint64, error) {
	switch x := v.(type) {
	case uint64:
		return x, nil
	case int64:
		if x < 0 {
			return 0, fmt.Errorf("%d out of range", x)
		}
		return uint64(x), nil
	case int:
		if x < 0 {
			return 0, fmt.Errorf("%d out of range", x)
		}
		return uint64(x), nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return 0, ErrNotFinite
		}
		if x != math.Trunc(x) || x < 0 || x >= math.MaxUint64 {
			return 0, fmt.Errorf("%g is not an unsigned integer in range", x)
		}
		return uint64(x), nil
	}
	return 0, fmt.Errorf("cannot write %T as unsigned integer", v)
}
