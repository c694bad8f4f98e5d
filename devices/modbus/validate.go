package modbus

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/fieldgate/fieldgate/devices"
)

var hex4 = regexp.MustCompile(`^[0-9A-Fa-f]{4}$`)

// ValidateDevice checks the Modbus keys of cfg and returns every problem,
// with paths relative to the device ("unit", "points[5].address"). It does
// not check the keys every driver shares (name, topic, qos, scale…); the
// devices package does.
func (d *Driver) ValidateDevice(cfg *devices.DeviceConfig) []*devices.FieldError {
	var errs []*devices.FieldError
	add := func(path, format string, args ...any) {
		errs = append(errs, &devices.FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	switch cfg.Transport {
	case "tcp":
		if cfg.Address == "" {
			add("address", "required for transport tcp (host:port)")
		} else if host, port, err := net.SplitHostPort(cfg.Address); err != nil || host == "" {
			add("address", "%q is not host:port", cfg.Address)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			add("address", "port %q is not 1-65535", port)
		}
		for _, k := range []struct {
			key string
			set bool
		}{
			{"port", cfg.Port != ""}, {"usb", cfg.USB != nil}, {"baud", cfg.Baud != 0},
			{"data_bits", cfg.DataBits != 0}, {"parity", cfg.Parity != ""}, {"stop_bits", cfg.StopBits != 0},
			{"rs485", cfg.RS485 != nil},
		} {
			if k.set {
				add(k.key, "not used by transport tcp")
			}
		}
		if cfg.Unit != nil && (*cfg.Unit < 0 || *cfg.Unit > 247) && *cfg.Unit != 255 {
			add("unit", "%d is not 0-247 (or 255)", *cfg.Unit)
		}
	case "rtu":
		switch {
		case cfg.Port == "" && cfg.USB == nil:
			add("port", "required for transport rtu (or usb: {vid, pid, serial})")
		case cfg.Port != "" && cfg.USB != nil:
			add("usb", "give either port or usb, not both")
		case cfg.USB != nil:
			if !hex4.MatchString(cfg.USB.VID) {
				add("usb.vid", "%q is not 4 hex digits", cfg.USB.VID)
			}
			if !hex4.MatchString(cfg.USB.PID) {
				add("usb.pid", "%q is not 4 hex digits", cfg.USB.PID)
			}
		case !strings.HasPrefix(cfg.Port, "/"):
			add("port", "%q is not an absolute device path", cfg.Port)
		}
		if cfg.Address != "" {
			add("address", "not used by transport rtu")
		}
		if cfg.Baud <= 0 {
			add("baud", "required for transport rtu (e.g. 9600, 19200, 115200)")
		}
		if cfg.DataBits != 0 && cfg.DataBits != 8 {
			add("data_bits", "%d: Modbus RTU frames are 8-bit binary (data_bits 8)", cfg.DataBits)
		}
		if p := strings.ToUpper(cfg.Parity); p != "" && p != "N" && p != "E" && p != "O" {
			add("parity", "%q is not N, E or O", cfg.Parity)
		}
		if cfg.StopBits != 0 && cfg.StopBits != 1 && cfg.StopBits != 2 {
			add("stop_bits", "%d is not 1 or 2", cfg.StopBits)
		}
		if cfg.RS485 != nil {
			if cfg.RS485.DelayRTSBeforeSend < 0 {
				add("rs485.delay_rts_before_send", "must not be negative")
			}
			if cfg.RS485.DelayRTSAfterSend < 0 {
				add("rs485.delay_rts_after_send", "must not be negative")
			}
		}
		if cfg.Unit != nil && (*cfg.Unit < 1 || *cfg.Unit > 247) {
			add("unit", "%d is not 1-247 (0 is broadcast, which no device answers)", *cfg.Unit)
		}
	case "":
		add("transport", "required: rtu or tcp")
	default:
		add("transport", "%q is not rtu or tcp", cfg.Transport)
	}
	if cfg.Timeout < 0 {
		add("timeout", "must not be negative")
	}
	if cfg.Retries != nil && (*cfg.Retries < 0 || *cfg.Retries > 10) {
		add("retries", "%d is not 0-10", *cfg.Retries)
	}
	if cfg.MaxGap != nil && (*cfg.MaxGap < 0 || *cfg.MaxGap > maxReadBits) {
		add("max_gap", "%d is not 0-%d", *cfg.MaxGap, maxReadBits)
	}
	if cfg.MaxRegisters < 0 || cfg.MaxRegisters > maxReadRegisters {
		add("max_registers", "%d is not 1-%d", cfg.MaxRegisters, maxReadRegisters)
	}
	if cfg.RequestPause < 0 {
		add("request_pause", "must not be negative")
	}
	for _, k := range []struct {
		key string
		set bool
	}{
		{"request", cfg.Request != ""}, {"parse", cfg.Parse != nil}, {"terminator", cfg.Terminator != ""},
		{"max_line_length", cfg.MaxLineLength != 0},
	} {
		if k.set {
			add(k.key, "not used by the modbus driver")
		}
	}
	maxRegs := maxReadRegisters
	if cfg.MaxRegisters > 0 {
		maxRegs = cfg.MaxRegisters
	}
	if len(cfg.Points) == 0 {
		add("points", "a modbus device needs at least one point")
	}
	for i := range cfg.Points {
		errs = append(errs, validatePoint(fmt.Sprintf("points[%d]", i), &cfg.Points[i], maxRegs)...)
	}
	return errs
}

func validatePoint(path string, p *devices.PointConfig, maxRegs int) []*devices.FieldError {
	var errs []*devices.FieldError
	add := func(key, format string, args ...any) {
		errs = append(errs, &devices.FieldError{Path: path + "." + key, Msg: fmt.Sprintf(format, args...)})
	}
	if p.Address == nil {
		add("address", "required (0-based register or bit address, 0-65535)")
	} else if *p.Address < 0 || *p.Address > 65535 {
		add("address", "%d is not 0-65535", *p.Address)
	}
	for _, k := range []struct {
		key string
		set bool
	}{
		{"sim", p.Sim != ""}, {"period", p.Period != 0}, {"value", p.Value != nil}, {"step", p.Step != nil},
	} {
		if k.set {
			add(k.key, "not used by the modbus driver")
		}
	}
	switch p.Table {
	case "":
		add("table", "required: holding, input, coil or discrete")
		return errs
	case devices.TableHolding, devices.TableInput, devices.TableCoil, devices.TableDiscrete:
	default:
		add("table", "%q is not holding, input, coil or discrete", p.Table)
		return errs
	}
	if p.Writable && p.Table != devices.TableHolding && p.Table != devices.TableCoil {
		add("writable", "table %s is read-only (only holding and coil points are writable)", p.Table)
	}
	if devices.IsBitTable(p.Table) {
		if p.Order != "" {
			add("order", "not used by table %s", p.Table)
		}
	} else if p.Type == "" {
		add("type", "required for table %s", p.Table)
		return errs
	}
	if p.Length != 0 && p.Type != "string" {
		add("length", "only for type string")
	}
	if p.Bit != nil && p.Type != "bit" {
		add("bit", "only for type bit")
	}
	if p.Type == "bit" && p.Bit == nil {
		add("bit", "required for type bit (0-15)")
	}
	codec, err := codecOf(p)
	if err != nil {
		key, msg, ok := strings.Cut(err.Error(), ": ")
		if !ok {
			key, msg = "type", err.Error()
		}
		add(key, "%s", msg)
		return errs
	}
	if n := codec.Count(); !devices.IsBitTable(p.Table) && n > maxRegs {
		add("type", "%s of %d registers exceeds max_registers %d", p.Type, n, maxRegs)
	}
	if p.Address != nil && *p.Address >= 0 && *p.Address+codec.Count()-1 > 65535 {
		add("address", "%d+%d registers run past 65535", *p.Address, codec.Count())
	}
	return errs
}
