package modbus

import (
	"fmt"
	"sort"

	mb "github.com/goburrow/modbus"

	"github.com/fieldgate/fieldgate/devices"
)

// Protocol limits per read request.
const (
	maxReadRegisters = 125
	maxReadBits      = 2000
	defaultMaxGap    = 10
)

// planPoint is a point inside a request.
type planPoint struct {
	index  int // devices.Point.Index
	offset int // registers or bits from the request's start
	codec  *devices.RegisterCodec
}

// request is one read of a contiguous range of one table.
type request struct {
	table  string
	fc     byte
	start  int
	count  int
	points []planPoint
}

func (r *request) pdu() mb.ProtocolDataUnit {
	return mb.ProtocolDataUnit{FunctionCode: r.fc, Data: []byte{
		byte(r.start >> 8), byte(r.start), byte(r.count >> 8), byte(r.count),
	}}
}

// planOptions are a device's read-planning settings.
type planOptions struct {
	maxGap       int // registers or bits merged across a gap
	maxRegisters int // per register request
	onePerPoint  bool
}

func planOptionsOf(cfg *devices.DeviceConfig) planOptions {
	o := planOptions{maxGap: defaultMaxGap, maxRegisters: maxReadRegisters, onePerPoint: cfg.OneRequestPerPoint}
	if cfg.MaxGap != nil {
		o.maxGap = *cfg.MaxGap
	}
	if cfg.MaxRegisters > 0 {
		o.maxRegisters = min(cfg.MaxRegisters, maxReadRegisters)
	}
	return o
}

var readFunction = map[string]byte{
	devices.TableCoil:     mb.FuncCodeReadCoils,
	devices.TableDiscrete: mb.FuncCodeReadDiscreteInputs,
	devices.TableHolding:  mb.FuncCodeReadHoldingRegisters,
	devices.TableInput:    mb.FuncCodeReadInputRegisters,
}

// compilePlan coalesces the points (codecs[i] belongs to points[i]) into
// read requests: per table, points sorted by address, merged while the gap
// to the previous point is at most maxGap and the request stays within
// max_registers (register tables) or 2000 bits (bit tables). Overlapping
// points share a request.
func compilePlan(points []*devices.Point, codecs []*devices.RegisterCodec, o planOptions) ([]*request, error) {
	type item struct {
		p     *devices.Point
		c     *devices.RegisterCodec
		start int
		end   int // exclusive
	}
	byTable := map[string][]item{}
	for i, p := range points {
		start := *p.Config.Address
		byTable[codecs[i].Table] = append(byTable[codecs[i].Table], item{p, codecs[i], start, start + codecs[i].Count()})
	}
	var reqs []*request
	for _, table := range []string{devices.TableHolding, devices.TableInput, devices.TableCoil, devices.TableDiscrete} {
		items := byTable[table]
		sort.SliceStable(items, func(i, j int) bool {
			if items[i].start != items[j].start {
				return items[i].start < items[j].start
			}
			return items[i].end < items[j].end
		})
		limit := o.maxRegisters
		if devices.IsBitTable(table) {
			limit = maxReadBits
		}
		var cur *request
		for _, it := range items {
			if it.end-it.start > limit {
				return nil, fmt.Errorf("point %s: %d registers exceed max_registers %d", it.p.Name(), it.end-it.start, limit)
			}
			if cur != nil && !o.onePerPoint && it.start-(cur.start+cur.count) <= o.maxGap && max(it.end, cur.start+cur.count)-cur.start <= limit {
				cur.count = max(it.end, cur.start+cur.count) - cur.start
			} else {
				cur = &request{table: table, fc: readFunction[table], start: it.start, count: it.end - it.start}
				reqs = append(reqs, cur)
			}
			cur.points = append(cur.points, planPoint{index: it.p.Index, offset: it.start - cur.start, codec: it.c})
		}
	}
	return reqs, nil
}
