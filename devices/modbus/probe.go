package modbus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/devices"
)

// ProbeOptions says which registers Probe reads. Zero values take the same
// defaults as a device config (data bits 8, parity N, stop bits 1, unit 1,
// timeout 1s, table holding).
type ProbeOptions struct {
	Transport string // rtu | tcp
	Port      string // rtu: serial device path
	Baud      int
	DataBits  int
	Parity    string // N | E | O
	StopBits  int
	Address   string // tcp: host:port

	Unit     int
	Table    string // holding | input | coil | discrete
	Register int    // first address, 0-based
	Count    int    // registers (or bits) to read, 1-125; default 4
	Timeout  time.Duration

	// Expect, when set, ranks the interpretations by their distance to it.
	Expect *float64
}

// Interpretation is one reading of a probed register range.
type Interpretation struct {
	Register int    // first register of the value
	Type     string // int16 … float64, string
	Order    string
	Value    any
	Err      error // e.g. devices.ErrNotFinite; Value is still shown
}

// Probe reads opts.Count registers from a live device and prints them raw,
// then every interpretation (each numeric type and byte order at every
// register offset, and the whole range as a string), closest to
// opts.Expect first when it is set. It is for finding the type and order of
// an undocumented register map.
func Probe(ctx context.Context, opts ProbeOptions, w io.Writer) error {
	if opts.Count == 0 {
		opts.Count = 4
	}
	if opts.Table == "" {
		opts.Table = devices.TableHolding
	}
	if opts.Unit == 0 {
		opts.Unit = defaultUnit
	}
	if opts.Transport == "tcp" { // serial flags have defaults; they mean nothing here
		opts.Port, opts.Baud, opts.DataBits, opts.Parity, opts.StopBits = "", 0, 0, "", 0
	}
	unit := opts.Unit
	cfg := devices.DeviceConfig{
		Name: "probe", Driver: "modbus", Transport: opts.Transport, Address: opts.Address, Unit: &unit,
		Port: opts.Port, Baud: opts.Baud, DataBits: opts.DataBits, Parity: opts.Parity, StopBits: opts.StopBits,
		Timeout: opts.Timeout, OneRequestPerPoint: true,
	}
	limit := maxReadRegisters
	if devices.IsBitTable(opts.Table) {
		limit = maxReadBits
	}
	if opts.Count < 1 || opts.Count > limit {
		return fmt.Errorf("probe: count %d is not 1-%d", opts.Count, limit)
	}
	addr := opts.Register
	cfg.Points = []devices.PointConfig{{Name: "probe", Table: opts.Table, Address: &addr, Type: "string", Length: 1}}
	if devices.IsBitTable(opts.Table) {
		cfg.Points[0].Type = "bool"
		cfg.Points[0].Length = 0
	}
	d := New(slog.New(slog.DiscardHandler))
	if errs := d.ValidateDevice(&cfg); len(errs) > 0 {
		joined := make([]error, len(errs))
		for i, e := range errs {
			joined[i] = e
		}
		return fmt.Errorf("probe: %w", errors.Join(joined...))
	}
	if addr+opts.Count-1 > 65535 {
		return fmt.Errorf("probe: registers %d+%d run past 65535", addr, opts.Count)
	}
	b, err := d.acquire(linkSettingsOf(&cfg))
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer d.release(b)
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	req := request{table: opts.Table, fc: readFunction[opts.Table], start: addr, count: opts.Count}
	r := b.do(ctx, &call{unit: byte(unit), req: req.pdu(), timeout: timeout, retries: 0})
	if r.err != nil {
		return fmt.Errorf("probe: read %s %d+%d from unit %d: %w", opts.Table, addr, opts.Count, unit, r.err)
	}
	data := r.pdu.Data[1:]
	if devices.IsBitTable(opts.Table) {
		fmt.Fprintf(w, "%s %d+%d (unit %d):\n", opts.Table, addr, opts.Count, unit)
		for i := 0; i < opts.Count; i++ {
			fmt.Fprintf(w, "  %5d  %d\n", addr+i, data[i/8]>>uint(i%8)&1)
		}
		return nil
	}
	words := make([]uint16, opts.Count)
	for i := range words {
		words[i] = uint16(data[2*i])<<8 | uint16(data[2*i+1])
	}
	fmt.Fprintf(w, "%s %d+%d (unit %d):\n", opts.Table, addr, opts.Count, unit)
	for i, v := range words {
		fmt.Fprintf(w, "  %5d  0x%04x  %6d  %6d\n", addr+i, v, v, int16(v))
	}
	list := Interpret(addr, words)
	if opts.Expect != nil {
		want := *opts.Expect
		sort.SliceStable(list, func(i, j int) bool { return distance(list[i], want) < distance(list[j], want) })
		fmt.Fprintf(w, "interpretations, closest to %s first:\n", strconv.FormatFloat(want, 'g', -1, 64))
	} else {
		fmt.Fprintln(w, "interpretations:")
	}
	for _, in := range list {
		note := ""
		if in.Err != nil {
			note = "  (" + in.Err.Error() + ")"
		}
		val := fmt.Sprint(in.Value)
		if s, ok := in.Value.(string); ok {
			val = strconv.Quote(s)
		}
		fmt.Fprintf(w, "  @%-5d %-8s %-9s %s%s\n", in.Register, in.Type, in.Order, val, note)
	}
	if opts.Expect == nil {
		fmt.Fprintln(w, "give --expect <value> to get the point line to paste for the closest interpretation")
		return nil
	}
	if best := list[0]; !math.IsInf(distance(best, *opts.Expect), 1) {
		fmt.Fprintf(w, "point line to paste under the device's points: (closest: @%d %s %s = %v)\n", best.Register, best.Type, best.Order, best.Value)
		fmt.Fprintf(w, "      %s\n", PointLine(opts.Table, best, opts.Count))
	}
	return nil
}

// PointLine is the YAML point entry that reads in like Probe did: the
// table, address, type and (when not the default) order of in; a string
// spans the registers probed.
func PointLine(table string, in Interpretation, registers int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "- {name: value_%d, table: %s, address: %d, type: %s", in.Register, table, in.Register, in.Type)
	if in.Order != "" && in.Order != "ABCD" && in.Order != "AB" && in.Order != "ABCDEFGH" {
		fmt.Fprintf(&b, ", order: %s", in.Order)
	}
	if in.Type == "string" {
		fmt.Fprintf(&b, ", length: %d", registers)
	}
	b.WriteString("}")
	return b.String()
}

var probeOrders = map[int][]string{
	1: {"AB", "BA"},
	2: {"ABCD", "CDAB", "BADC", "DCBA"},
	4: {"ABCDEFGH", "GHEFCDAB", "BADCFEHG", "HGFEDCBA"},
}

// Interpret returns every type and order interpretation of words (read from
// register first): each numeric type at every offset where it fits, in each
// of the common orders, and the whole range as a string in both byte orders.
func Interpret(first int, words []uint16) []Interpretation {
	var out []Interpretation
	types := []string{"int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64"}
	for off := range words {
		for _, typ := range types {
			width := devices.RegisterTypeWidth(typ)
			if off+width > len(words) {
				continue
			}
			for _, order := range probeOrders[width] {
				c, err := devices.NewRegisterCodec(devices.TableHolding, typ, order, 0, 0)
				if err != nil {
					continue
				}
				v, err := c.Decode(words[off : off+width])
				out = append(out, Interpretation{Register: first + off, Type: typ, Order: order, Value: v, Err: err})
			}
		}
	}
	for _, order := range []string{"AB", "BA"} {
		c, err := devices.NewRegisterCodec(devices.TableHolding, "string", order, len(words), 0)
		if err != nil {
			continue
		}
		v, err := c.Decode(words)
		out = append(out, Interpretation{Register: first, Type: "string", Order: order, Value: v, Err: err})
	}
	return out
}

// distance is how far an interpretation is from want (strings and
// non-finite values last).
func distance(in Interpretation, want float64) float64 {
	var f float64
	switch v := in.Value.(type) {
	case int64:
		f = float64(v)
	case uint64:
		f = float64(v)
	case float64:
		f = v
	case string:
		if g, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			f = g
		} else {
			return math.Inf(1)
		}
	default:
		return math.Inf(1)
	}
	if math.IsNaN(f) {
		return math.Inf(1)
	}
	return math.Abs(f - want)
}
