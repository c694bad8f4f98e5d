# A pymodbus 3.0 (Debian) RTU slave for fieldgate-bench: unit 1, holding
# registers 100-101 hold 21.5 as float32 (word order CDAB).
#   /usr/bin/python3 slave.py /path/to/pty BAUD
import asyncio
import sys

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.server.async_io import ModbusSerialServer
from pymodbus.transaction import ModbusRtuFramer


async def main():
    hr = [0] * 300
    hr[100], hr[101] = 0x0000, 0x41AC
    unit = ModbusSlaveContext(hr=ModbusSequentialDataBlock(0, hr), zero_mode=True)
    context = ModbusServerContext(slaves={1: unit}, single=False)
    srv = ModbusSerialServer(context, framer=ModbusRtuFramer, port=sys.argv[1],
                             baudrate=int(sys.argv[2]), parity="N", stopbits=1,
                             bytesize=8, timeout=0.05)
    await srv.start()
    print("ready", flush=True)
    await srv.serve_forever()


asyncio.run(main())
