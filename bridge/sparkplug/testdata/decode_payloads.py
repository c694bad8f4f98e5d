"""Decode Sparkplug B payloads with classes protoc generated for Python.

Usage: decode_payloads.py <dir with sparkplug_b_pb2.py> <payload file>...

Prints one JSON document: a list with one object per payload file, every
field read through the Python protobuf runtime (Debian's python3-protobuf),
so the Go encoder is checked by an implementation it shares no code with.
Integer values are reinterpreted from the datatype as the specification
says (Int8/Int16/Int32 sign-extended in the uint32 int_value, Int64 two's
complement in long_value) and every value is printed as text to keep 64-bit
integers exact.
"""

import json
import os
import sys

sys.path.insert(0, sys.argv[1])
import sparkplug_b_pb2 as spb  # noqa: E402


def signed(value, bits):
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def metric_value(m):
    field = m.WhichOneof("value")
    if field is None:
        return None, None
    v = getattr(m, field)
    dt = spb.DataType.Name(m.datatype) if m.HasField("datatype") else None
    if field == "int_value" and dt in ("Int8", "Int16", "Int32"):
        v = signed(v, 32)
    elif field == "long_value" and dt == "Int64":
        v = signed(v, 64)
    if isinstance(v, bool):
        return field, "true" if v else "false"
    if isinstance(v, float):
        return field, repr(v)
    return field, str(v)


def opt(msg, name):
    return getattr(msg, name) if msg.HasField(name) else None


out = []
for path in sys.argv[2:]:
    p = spb.Payload()
    with open(path, "rb") as f:
        p.ParseFromString(f.read())
    metrics = []
    for m in p.metrics:
        field, value = metric_value(m)
        metrics.append({
            "name": opt(m, "name"),
            "alias": opt(m, "alias"),
            "timestamp": opt(m, "timestamp"),
            "datatype": spb.DataType.Name(m.datatype) if m.HasField("datatype") else None,
            "historical": opt(m, "is_historical"),
            "null": opt(m, "is_null"),
            "field": field,
            "value": value,
        })
    out.append({
        "file": os.path.basename(path),
        "timestamp": opt(p, "timestamp"),
        "seq": opt(p, "seq"),
        "metrics": metrics,
    })
json.dump(out, sys.stdout, indent=1)
