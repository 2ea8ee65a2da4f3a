"""Output that cannot fail half-way: strict JSON (no NaN/Infinity tokens, invalid UTF-8 from a file
shown as `\\xNN` text) for the commands' --json, and the same escape for names in text output."""

from __future__ import annotations

import json
import math

# the reader keeps invalid UTF-8 bytes as lone surrogates (surrogateescape); these show them
_ENC, _ESC = "utf-8", "surrogateescape"


def printable(s: str) -> str:
    """`s` with bytes that were not valid UTF-8 in the file written as `\\xNN`."""
    try:
        s.encode(_ENC)
        return s
    except UnicodeEncodeError:
        return s.encode(_ENC, _ESC).decode(_ENC, "backslashreplace")


def json_safe(obj):
    """A copy of obj that json.dumps(allow_nan=False) accepts: non-finite floats become the
    strings "nan", "inf", "-inf"; strings (and dict keys) pass through printable()."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, dict):
        return {printable(str(k)): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dump_json(obj, out) -> None:
    """One JSON document on `out`, valid for any strict parser."""
    json.dump(json_safe(obj), out, indent=1, allow_nan=False)
    out.write("\n")
