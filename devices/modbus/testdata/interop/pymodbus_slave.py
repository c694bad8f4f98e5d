"""A pymodbus 3.0 slave for the driver's interop tests.

usage: pymodbus_slave.py rtu PTY_PATH | tcp
Units 1 and 7 answer (zero_mode: request address N is block index N);
other unit ids get silence. Prints "READY <tcp port or 0>" once serving.
"""
import asyncio
import sys

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.server.async_io import ModbusSerialServer, ModbusTcpServer
from pymodbus.transaction import ModbusRtuFramer, ModbusSocketFramer


def unit(base):
    hr = [0] * 200
    # float32 21.5 ABCD at 0, CDAB at 2; int16 -2 at 4; uint32 at 5;
    # "PYMB" at 7; base marker at 20.
    hr[0:2] = [0x41AC, 0x0000]
    hr[2:4] = [0x0000, 0x41AC]
    hr[4] = 0xFFFE
    hr[5:7] = [0x0001, 0x0002]
    hr[7:9] = [0x5059, 0x4D42]
    hr[20] = base
    ir = [base + i for i in range(100)]
    co = [False] * 100
    co[3] = True
    di = [i % 2 == 1 for i in range(100)]
    return ModbusSlaveContext(
        hr=ModbusSequentialDataBlock(0, hr),
        ir=ModbusSequentialDataBlock(0, ir),
        co=ModbusSequentialDataBlock(0, co),
        di=ModbusSequentialDataBlock(0, di),
        zero_mode=True,
    )


async def main():
    ctx = ModbusServerContext(slaves={1: unit(100), 7: unit(700)}, single=False)
    if sys.argv[1] == "rtu":
        ser = ModbusSerialServer(ctx, framer=ModbusRtuFramer, port=sys.argv[2],
                                 baudrate=115200, timeout=0.005)
        await ser.start()
        print("READY 0", flush=True)
        await ser.serve_forever()
    else:
        srv = ModbusTcpServer(ctx, framer=ModbusSocketFramer, address=("127.0.0.1", 0))
        task = asyncio.create_task(srv.serve_forever())
        await srv.serving
        print("READY %d" % srv.server.sockets[0].getsockname()[1], flush=True)
        await task


asyncio.run(main())
