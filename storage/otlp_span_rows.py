"""``SpanRow`` messages (``otlp_span_row.proto``): OTLP spans framed for ClickHouse to decode.

Each message is one span's own bytes, cut out of the OTLP request unchanged, followed by the
span's resource (attributes spelled by the Python helpers, once per resource) and scope.
Framing costs a few slices per span; :mod:`genops.storage.otlp_native` inserts the stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

# Spool/pipeline kind of a batch of SpanRow messages (length-delimited).
KIND = "otlp-span-rows"


_SCHEMA_RESOURCE = resources.files("genops.storage").joinpath("otlp_span_row.proto")


def _schema_text() -> str:
    """The .proto without comments and blank lines (it travels as a query setting)."""
    lines = [line.split("//", 1)[0].rstrip() for line in _SCHEMA_RESOURCE.read_text().splitlines()]
    return "\n".join(line for line in lines if line)


SCHEMA = _schema_text()
SCHEMA_FILE = Path(str(_SCHEMA_RESOURCE))


def _tail_class() -> Any:
    """A message class for fields 1000-1002 of SpanRow (built at run time: no generated code)."""
    file = descriptor_pb2.FileDescriptorProto(name="genops_span_row_tail.proto", package="genops", syntax="proto3")
    pair = file.message_type.add(name="StringPair")
    pair.field.add(name="key", number=1, type=9, label=1)
    pair.field.add(name="value", number=2, type=9, label=1)
    scope = file.message_type.add(name="Scope")
    scope.field.add(name="name", number=1, type=9, label=1)
    scope.field.add(name="version", number=2, type=9, label=1)
    tail = file.message_type.add(name="SpanRowTail")
    tail.field.add(name="resource_attributes", number=1000, type=11, label=3, type_name=".genops.StringPair")
    tail.field.add(name="service_name", number=1001, type=9, label=1)
    tail.field.add(name="scope", number=1002, type=11, label=1, type_name=".genops.Scope")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("genops.SpanRowTail"))


SpanRowTail = _tail_class()


def tail_bytes(resource: dict[str, str], service: str, scope_name: str, scope_version: str) -> bytes:
    """Fields 1000-1002 of a SpanRow: the resource attributes in order, service name, scope."""
    tail = SpanRowTail(service_name=service)
    for key, value in resource.items():
        tail.resource_attributes.add(key=key, value=value)
    tail.scope.name = scope_name
    tail.scope.version = scope_version
    return tail.SerializeToString()


# -- cutting spans out of a request ----------------------------------------------------------


def _len_fields(buf: bytes, pos: int, end: int) -> list[tuple[int, int, int]]:
    """``(field number, start, end)`` of every length-delimited field in ``buf[pos:end]``."""
    out: list[tuple[int, int, int]] = []
    append = out.append
    while pos < end:
        key = buf[pos]
        pos += 1
        if key & 0x80:
            key &= 0x7F
            shift = 7
            while True:
                byte = buf[pos]
                pos += 1
                key |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                shift += 7
        wire = key & 7
        if wire == 2:
            size = buf[pos]
            pos += 1
            if size & 0x80:
                size &= 0x7F
                shift = 7
                while True:
                    byte = buf[pos]
                    pos += 1
                    size |= (byte & 0x7F) << shift
                    if byte < 0x80:
                        break
                    shift += 7
            append((key >> 3, pos, pos + size))
            pos += size
        elif wire == 0:
            while buf[pos] & 0x80:
                pos += 1
            pos += 1
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:  # groups: not in OTLP; the Python parser has accepted the body, so this cannot happen
            raise ValueError(f"unexpected protobuf wire type {wire}")
    return out


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Length prefixes of rows up to 16 KiB, computed once (one list lookup per span instead of a loop).
_PREFIXES = [_varint(n) for n in range(1 << 14)]


def frame_span_rows(body: bytes, tails: Sequence[Sequence[bytes]], keep: Sequence[bool]) -> bytes:
    """Length-delimited SpanRows for the spans of ``body`` whose ``keep`` flag is set.

    ``tails[r][s]`` is :func:`tail_bytes` of resource_spans ``r``, scope_spans ``s``; ``keep``
    has one flag per span in request order (the order the Python parser iterated them).
    """
    out: list[bytes] = []
    append = out.append
    prefixes = _PREFIXES
    small = len(prefixes)
    index = 0
    r = 0
    for field, start, end in _len_fields(body, 0, len(body)):
        if field != 1:
            continue
        s = 0
        for field2, start2, end2 in _len_fields(body, start, end):
            if field2 != 2:
                continue
            tail = tails[r][s]
            tail_len = len(tail)
            for field3, start3, end3 in _len_fields(body, start2, end2):
                if field3 != 2:
                    continue
                if keep[index]:
                    size = end3 - start3 + tail_len
                    append(prefixes[size] if size < small else _varint(size))
                    append(body[start3:end3])
                    append(tail)
                index += 1
            s += 1
        r += 1
    return b"".join(out)


def split_span_rows(payload: bytes) -> list[bytes]:
    """The SpanRow messages of a length-delimited payload."""
    rows = []
    pos, end = 0, len(payload)
    while pos < end:
        size = 0
        shift = 0
        while True:
            byte = payload[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        rows.append(payload[pos:pos + size])
        pos += size
    return rows


# -- inserting -------------------------------------------------------------------------------
