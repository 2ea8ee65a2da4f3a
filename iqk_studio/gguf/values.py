"""GGUF key/value encoding: value type ids, a bounds-checked decoder over a buffer and an encoder.

Layout (little-endian): string = u64 len | bytes; value = (u32 type | payload);
array payload = u32 item_type | u64 n | n items (strings each with their own u64 length).
"""

from __future__ import annotations

import math
import struct
from enum import IntEnum

import numpy as np


class ValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# scalar value type -> numpy dtype (little-endian)
DTYPES: dict[ValueType, np.dtype] = {
    ValueType.UINT8: np.dtype("<u1"),
    ValueType.INT8: np.dtype("<i1"),
    ValueType.UINT16: np.dtype("<u2"),
    ValueType.INT16: np.dtype("<i2"),
    ValueType.UINT32: np.dtype("<u4"),
    ValueType.INT32: np.dtype("<i4"),
    ValueType.FLOAT32: np.dtype("<f4"),
    ValueType.BOOL: np.dtype("<u1"),
    ValueType.UINT64: np.dtype("<u8"),
    ValueType.INT64: np.dtype("<i8"),
    ValueType.FLOAT64: np.dtype("<f8"),
}

# short names as llama.cpp's metadata dump prints them
TYPE_NAMES: dict[ValueType, str] = {
    ValueType.UINT8: "u8", ValueType.INT8: "i8", ValueType.UINT16: "u16",
    ValueType.INT16: "i16", ValueType.UINT32: "u32", ValueType.INT32: "i32",
    ValueType.FLOAT32: "f32", ValueType.BOOL: "bool", ValueType.STRING: "str",
    ValueType.ARRAY: "arr", ValueType.UINT64: "u64", ValueType.INT64: "i64",
    ValueType.FLOAT64: "f64",
}

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
STR_ENCODING = "utf-8"
STR_ERRORS = "surrogateescape"  # invalid UTF-8 bytes survive a read/write round trip

# Caps checked before anything is allocated: a corrupted length in a 50 GiB file must not become
# a 10 GiB allocation. Each is far above what real files hold.
MAX_NAME_BYTES = 65535  # a key (GGUF spec: at most 2^16-1 bytes) or a tensor name
MAX_STRING_BYTES = 1 << 26  # one string value (chat templates: KBs; a tokenizer.json: <35 MB)
MAX_ARRAY_ITEMS = 1 << 22  # items of a string array (vocabularies and merges: <300k)
MAX_ARRAY_BYTES = 1 << 26  # payload of a numeric array (scores, token types: ~1 MB)
SHORT_CHARS = 60  # names and values quoted in messages are cut to this many characters


def short(s) -> str:
    """repr() of a name or value for a message: ASCII-safe (invalid UTF-8 shows as escapes) and
    cut, so a corrupted 1 GB string never becomes a 1 GB message."""
    r = repr(s)
    if len(r) <= SHORT_CHARS:
        return r
    tail = f"... ({len(s):,} characters)" if isinstance(s, str) else "..."
    return r[:SHORT_CHARS] + tail


class DecodeError(Exception):
    """Raised by the decoder with (offset, message); the reader adds the file name."""

    def __init__(self, offset: int, message: str):
        super().__init__(offset, message)
        self.offset = offset
        self.message = message


class Cursor:
    """A position in a read-only buffer that never reads past `end`."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf, pos: int, end: int):
        self.buf, self.pos, self.end = buf, pos, end

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise DecodeError(
                self.pos, f"{what} needs {n} bytes but only {self.end - self.pos} remain")

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def string(self, what: str, limit: int = MAX_STRING_BYTES) -> str:
        n = self.u64(f"length of {what}")
        if n > self.end - self.pos:
            raise DecodeError(self.pos - 8, f"{what}: string length {n} exceeds the "
                              f"{self.end - self.pos} bytes left in the file")
        if n > limit:
            raise DecodeError(self.pos - 8, f"{what}: string length {n:,} is over the limit "
                              f"of {limit:,} bytes (a corrupted length?)")
        s = bytes(self.buf[self.pos:self.pos + n]).decode(STR_ENCODING, STR_ERRORS)
        self.pos += n
        return s


def read_value(cur: Cursor, vtype: int, what: str):
    """Decode one value of type `vtype`; returns (value, item_type or None)."""
    try:
        vt = ValueType(vtype)
    except ValueError:
        raise DecodeError(cur.pos - 4, f"{what}: unknown value type {vtype}") from None
    if vt is ValueType.STRING:
        return cur.string(what), None
    if vt is ValueType.ARRAY:
        return _read_array(cur, what)
    dt = DTYPES[vt]
    cur.need(dt.itemsize, what)
    v = np.frombuffer(cur.buf, dt, 1, cur.pos)[0]
    cur.pos += dt.itemsize
    return (bool(v) if vt is ValueType.BOOL else v.item()), None


def _read_array(cur: Cursor, what: str):
    start = cur.pos
    itype = cur.u32(f"item type of array {what}")
    n = cur.u64(f"length of array {what}")
    try:
        it = ValueType(itype)
    except ValueError:
        raise DecodeError(start, f"{what}: unknown array item type {itype}") from None
    if it is ValueType.ARRAY:
        raise DecodeError(start, f"{what}: nested arrays are not supported")
    left = cur.end - cur.pos
    if it is ValueType.STRING:
        if n > left // 8:
            raise DecodeError(start, f"{what}: array of {n} strings cannot fit in the "
                              f"{left} bytes left in the file")
        if n > MAX_ARRAY_ITEMS:
            raise DecodeError(start, f"{what}: array of {n:,} strings is over the limit of "
                              f"{MAX_ARRAY_ITEMS:,} items (a corrupted count?)")
        return _read_str_array(cur, n, what), it
    dt = DTYPES[it]
    if n > left // dt.itemsize:
        raise DecodeError(start, f"{what}: array of {n} {TYPE_NAMES[it]} cannot fit in the "
                          f"{left} bytes left in the file")
    if n * dt.itemsize > MAX_ARRAY_BYTES:
        raise DecodeError(start, f"{what}: array of {n:,} {TYPE_NAMES[it]} is over the limit "
                          f"of {MAX_ARRAY_BYTES:,} bytes (a corrupted count?)")
    arr = np.frombuffer(cur.buf, dt, n, cur.pos).copy()
    cur.pos += n * dt.itemsize
    if it is ValueType.BOOL:
        arr = arr.astype(bool)
    return arr, it


def _read_str_array(cur: Cursor, n: int, what: str) -> list[str]:
    # Lengths are interleaved with the bytes, so the walk is sequential. A tight loop (~0.3 us
    # per string, 262k tokens in ~0.08 s) measured faster than a vectorised decode of the joined
    # region (bench/bench_open.py), whose str.split alone costs as much as the per-item decodes.
    buf, pos, end = cur.buf, cur.pos, cur.end
    unpack = _U64.unpack_from
    out = [""] * n
    for i in range(n):
        if pos + 8 > end:
            raise DecodeError(pos, f"{what}[{i}]: string length needs 8 bytes but only "
                              f"{end - pos} remain")
        (ln,) = unpack(buf, pos)
        pos += 8
        if ln > end - pos:
            raise DecodeError(pos - 8, f"{what}[{i}]: string length {ln} exceeds the "
                              f"{end - pos} bytes left in the file")
        if ln > MAX_STRING_BYTES:
            raise DecodeError(pos - 8, f"{what}[{i}]: string length {ln:,} is over the limit "
                              f"of {MAX_STRING_BYTES:,} bytes (a corrupted length?)")
        out[i] = buf[pos:pos + ln].decode(STR_ENCODING, STR_ERRORS)
        pos += ln
    cur.pos = pos
    return out


# ------------------------------------------------------------------------ typed metadata reads

class MetadataError(ValueError):
    """A metadata value of the wrong type or out of range; the message names the key."""


def _describe(v) -> str:
    kind = "array" if isinstance(v, (list, tuple, np.ndarray)) else type(v).__name__
    return f"{kind} {short(v)}"


def meta_int(md, key: str, default=None, lo: int = 0, hi: int = 2**31 - 1,
             per_layer: bool = False):
    """An integer hyper-parameter (any GGUF integer type, not bool or float) within [lo, hi];
    `default` when absent. per_layer: a non-empty integer array gives its first value (layer 0,
    as llama.cpp's get_key_or_arr)."""
    v = md.get(key)
    if v is None:
        return default
    if per_layer and isinstance(v, (list, tuple, np.ndarray)) and len(v):
        arr = np.asarray(v)
        if arr.dtype.kind in "iu":
            v = arr.reshape(-1)[0]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise MetadataError(f"metadata {key} must be an integer, got {_describe(v)}")
    if not lo <= int(v) <= hi:
        raise MetadataError(f"metadata {key} = {int(v)} is out of range ({lo} to {hi})")
    return int(v)


def meta_float(md, key: str, default=None) -> float | None:
    """A finite real hyper-parameter (float or integer type); `default` when absent."""
    v = md.get(key)
    if v is None:
        return default
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise MetadataError(f"metadata {key} must be a number, got {_describe(v)}")
    f = float(v)
    if not math.isfinite(f):
        raise MetadataError(f"metadata {key} must be finite, got {f}")
    return f


def meta_str(md, key: str, default: str = "") -> str:
    v = md.get(key)
    if v is None:
        return default
    if not isinstance(v, str):
        raise MetadataError(f"metadata {key} must be a string, got {_describe(v)}")
    return v


def meta_len(md, key: str, item=None) -> int | None:
    """Length of an array value (None when absent); item: required element kind, str or a
    numpy dtype kind string such as "iu" / "f"."""
    v = md.get(key)
    if v is None:
        return None
    if isinstance(v, list) and (item is None or item is str):
        if item is str and not all(isinstance(x, str) for x in v):
            raise MetadataError(f"metadata {key} must be an array of strings")
        return len(v)
    if isinstance(v, np.ndarray) and item is not str and (item is None or v.dtype.kind in item):
        return len(v)
    want = "strings" if item is str else "numbers" if item else "values"
    raise MetadataError(f"metadata {key} must be an array of {want}, got {_describe(v)}")


# ---------------------------------------------------------------------------------- encoding

def infer_type(value) -> tuple[ValueType, ValueType | None]:
    """Default GGUF type of a Python value: bool, int (u32 / i32 / u64 / i64), float (f32), str,
    list/tuple of those, or a numpy array (its dtype)."""
    if isinstance(value, (bool, np.bool_)):
        return ValueType.BOOL, None
    if isinstance(value, (int, np.integer)):
        v = int(value)
        if 0 <= v < 2**32:
            return ValueType.UINT32, None
        if -(2**31) <= v < 0:
            return ValueType.INT32, None
        return (ValueType.UINT64 if v > 0 else ValueType.INT64), None
    if isinstance(value, (float, np.floating)):
        return ValueType.FLOAT32, None
    if isinstance(value, str):
        return ValueType.STRING, None
    if isinstance(value, np.ndarray):
        for vt, dt in DTYPES.items():
            if vt is not ValueType.BOOL and value.dtype.newbyteorder("<") == dt:
                return ValueType.ARRAY, vt
        if value.dtype == bool:
            return ValueType.ARRAY, ValueType.BOOL
        raise ValueError(f"no GGUF array type for numpy dtype {value.dtype}")
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return ValueType.ARRAY, ValueType.STRING
        if all(isinstance(v, bool) for v in value):
            return ValueType.ARRAY, ValueType.BOOL
        if all(isinstance(v, int) for v in value):
            return ValueType.ARRAY, ValueType.INT32
        if all(isinstance(v, (int, float)) for v in value):
            return ValueType.ARRAY, ValueType.FLOAT32
    raise ValueError(f"cannot infer a GGUF type for {type(value).__name__} value")


def encode_string(s: str) -> bytes:
    b = s.encode(STR_ENCODING, STR_ERRORS)
    return _U64.pack(len(b)) + b


def encode_kv(key: str, value, vtype: ValueType | None = None,
              item_type: ValueType | None = None) -> bytes:
    """Bytes of one key/value pair; types default to infer_type(value)."""
    if vtype is None:
        vtype, item_type = infer_type(value)
    vtype = ValueType(vtype)
    parts = [encode_string(key), _U32.pack(vtype)]
    if vtype is ValueType.STRING:
        parts.append(encode_string(value))
    elif vtype is ValueType.ARRAY:
        if item_type is None:
            item_type = infer_type(value)[1]
        item_type = ValueType(item_type)
        parts += [_U32.pack(item_type), _U64.pack(len(value))]
        if item_type is ValueType.STRING:
            parts += [encode_string(s) for s in value]
        elif item_type is ValueType.ARRAY:
            raise ValueError(f"{key}: nested arrays are not supported")
        else:
            parts.append(np.asarray(value).astype(DTYPES[item_type]).tobytes())
    else:
        parts.append(np.asarray(value).astype(DTYPES[vtype]).tobytes())
    return b"".join(parts)
