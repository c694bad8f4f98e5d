# A pymodbus 3.0 slave for the end-to-end tests: units 1 and 7 with the same
# register map, over RTU (a serial port path) or TCP (a port number).
#   /usr/bin/python3 modbus_slave.py rtu /path/to/pty
#   /usr/bin/python3 modbus_slave.py tcp 15020
import asyncio
import sys

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.server.async_io import ModbusSerialServer, ModbusTcpServer
from pymodbus.transaction import ModbusRtuFramer, ModbusSocketFramer


def unit():
    hr = [0] * 300
    hr[100], hr[101] = 0x0000, 0x41AC  # 21.5 as float32, word order CDAB
    hr[200] = 450                      # setpoint 45.0 with scale 0.1
    ir = [0] * 10
    ir[3] = 153                        # pressure 1.53 bar with scale 0.01
    co = [0] * 10
    co[0] = 1                          # pump on
    return ModbusSlaveContext(
        di=ModbusSequentialDataBlock(0, [0] * 10),
        co=ModbusSequentialDataBlock(0, co),
        hr=ModbusSequentialDataBlock(0, hr),
        ir=ModbusSequentialDataBlock(0, ir),
        zero_mode=True)


async def main():
    context = ModbusServerContext(slaves={1: unit(), 7: unit()}, single=False)
    if sys.argv[1] == "rtu":
        srv = ModbusSerialServer(context, framer=ModbusRtuFramer, port=sys.argv[2],
                                 baudrate=9600, parity="N", stopbits=1, bytesize=8,
                                 timeout=0.05)
        await srv.start()
        print("ready", flush=True)
        await srv.serve_forever()
    else:
        srv = ModbusTcpServer(context, framer=ModbusSocketFramer,
                              address=("127.0.0.1", int(sys.argv[2])))
        task = asyncio.create_task(srv.serve_forever())
        await srv.serving
        print("ready", flush=True)
        await task


asyncio.run(main())
