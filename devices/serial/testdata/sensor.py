#!/usr/bin/python3
"""A misbehaving line sensor: writes good lines and every kind of bad line to
the serial port given as argv[1], ends with a line cut short, and exits."""
import sys, time

lines = [
    b"T=21.5 H=40\r\n",                # good
    b"\x00\x01\x02\x1b[2J\r\n",        # garbage (control characters)
    b"T=\xff\xfe H=1\r\n",             # invalid UTF-8
    b"T=1 H=1 " * 40 + b"\r\n",        # over-long
    b"ERR sensor warming up\r\n",      # does not match the parser
    b"T=22.0 H=41\r\n",                # good
    b"T=99.9 H=",                      # partial: the port goes away first
]
with open(sys.argv[1], "wb", buffering=0) as port:
    for line in lines:
        port.write(line)
        time.sleep(0.02)
    time.sleep(0.2)
