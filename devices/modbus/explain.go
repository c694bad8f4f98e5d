package modbus

import (
	"context"
	"errors"
	"fmt"

	mb "github.com/goburrow/modbus"

	"github.com/fieldgate/fieldgate/devices"
)

// functionNames name the function codes the driver sends.
var functionNames = map[byte]string{
	mb.FuncCodeReadCoils:              "read coils",
	mb.FuncCodeReadDiscreteInputs:     "read discrete inputs",
	mb.FuncCodeReadHoldingRegisters:   "read holding registers",
	mb.FuncCodeReadInputRegisters:     "read input registers",
	mb.FuncCodeWriteSingleCoil:        "write single coil",
	mb.FuncCodeWriteSingleRegister:    "write single register",
	mb.FuncCodeWriteMultipleCoils:     "write multiple coils",
	mb.FuncCodeWriteMultipleRegisters: "write multiple registers",
}

// explain wraps the error of a request to this device so that it names
// the device, the unit, the function and the address, and says what to
// check: the one line a person on site reads in the journal.
func (c *Conn) explain(req mb.ProtocolDataUnit, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errClosed) {
		return err
	}
	what := functionNames[req.FunctionCode]
	if what == "" {
		what = "function"
	}
	where := ""
	if len(req.Data) >= 2 {
		where = fmt.Sprintf(" at address %d", int(req.Data[0])<<8|int(req.Data[1]))
		switch req.FunctionCode {
		case mb.FuncCodeReadCoils, mb.FuncCodeReadDiscreteInputs, mb.FuncCodeReadHoldingRegisters, mb.FuncCodeReadInputRegisters:
			if len(req.Data) >= 4 {
				where += fmt.Sprintf(", count %d", int(req.Data[2])<<8|int(req.Data[3]))
			}
		}
	}
	return fmt.Errorf("device %s unit %d: %s (function %d)%s: %w%s", c.dev.Name(), c.unit, what, req.FunctionCode, where, err, c.hint(err))
}

// hint says what to check for err, with a leading "; ", or "".
func (c *Conn) hint(err error) string {
	var ee ExceptionError
	var fe *frameError
	rtu := c.dev.Config.Transport != "tcp"
	switch {
	case errors.As(err, &ee):
		switch ee.Code {
		case 1:
			return "; the device does not support this function: check the point's table"
		case 2:
			return "; the device has no such register: check the point's table and address (0-based) against its register map, and max_registers / max_gap"
		case 3:
			return "; the device refuses the value or the count: check type, length and max_registers"
		case 10, 11:
			return "; the Modbus gateway cannot reach that unit: check unit and the gateway's serial side"
		}
	case errors.Is(err, ErrTimeout) || errors.Is(err, ErrUnitBackoff):
		if rtu {
			return "; check the wiring (A/B), baud, parity and stop bits, and that unit matches the device's address"
		}
		return "; check address and unit: a Modbus TCP gateway stays silent for a unit it does not know"
	case devices.PortHint(err) != "":
		return "; " + devices.PortHint(err)
	case errors.As(err, &fe):
		if rtu {
			return "; garbled answer (CRC or framing): check baud, parity, stop bits, termination, and that no other master shares the bus"
		}
		return "; malformed answer: is this port a Modbus TCP server?"
	}
	return ""
}
