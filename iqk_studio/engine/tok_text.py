"""Text as llama.cpp's tools hand it to the tokenizer: llama-perplexity's `-f` preparation
(one trailing newline dropped, escape processing) and unicode_cpts_from_utf8's lenient decoding.
"""

from __future__ import annotations


def llama_utf8(s: str) -> str:
    """Text as llama.cpp's unicode_cpts_from_utf8 sees it: each byte that does not start a
    well-formed sequence becomes one U+FFFD (Python's decoder would merge some of them)."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    b, out, i = s.encode("utf-8", "surrogateescape"), [], 0
    while i < len(b):
        c = b[i]
        k = 0 if c < 0x80 else -1 if c < 0xC0 else 1 if c < 0xE0 else 2 if c < 0xF0 else \
            3 if c < 0xF8 else -1
        if k < 0 or i + k >= len(b) or any(x & 0xC0 != 0x80 for x in b[i + 1:i + 1 + k]):
            out.append("\ufffd")
            i += 1
            continue
        cp = c & (0x7F, 0x1F, 0x0F, 0x07)[k]
        for x in b[i + 1:i + 1 + k]:
            cp = (cp << 6) | (x & 0x3F)
        # lone surrogates / > U+10FFFF cannot reach the HF tokenizer (inexact, never in text)
        out.append("\ufffd" if 0xD800 <= cp < 0xE000 or cp > 0x10FFFF else chr(cp))
        i += 1 + k
    return "".join(out)


_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("'"): 39, ord('"'): 34, ord("\\"): 92}


def _strtol16_2(c1: int, c2: int) -> int | None:
    # std::strtol(x, &end, 16) over the two chars x = c1 c2, accepted only if both are consumed:
    # optional leading isspace(), optional sign, then hex digits ("0x" needs a digit after it)
    hexd = b"0123456789abcdefABCDEF"
    if c1 in hexd and c2 in hexd:
        return int(bytes([c1, c2]), 16)
    if c1 in b" \t\n\v\f\r+-" and c2 in hexd:
        return -int(chr(c2), 16) if c1 == ord("-") else int(chr(c2), 16)
    return None


def process_escapes(data: bytes) -> bytes:
    """common's string_process_escapes: \\n \\r \\t \\' \\" \\\\ \\xHH become the bytes they name;
    any other backslash pair is kept as is."""
    if b"\\" not in data:
        return data
    out, i, n = bytearray(), 0, len(data)
    while i < n:
        c = data[i]
        if c != 0x5C or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        e = data[i + 1]
        i += 2
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            continue
        if e == ord("x") and i + 1 < n:
            v = _strtol16_2(data[i], data[i + 1])
            if v is not None:
                out.append(v & 0xFF)
                i += 2
                continue
        out += bytes([0x5C, e])
    return bytes(out)


def perplexity_text(data: bytes, escape: bool = True) -> bytes:
    """The prompt llama-perplexity tokenizes for `-f FILE` with these bytes: exactly one trailing
    newline removed, then escape processing (on by default; `--no-escape` turns it off)."""
    if data.endswith(b"\n"):
        data = data[:-1]
    return process_escapes(data) if escape else data


def read_perplexity_text(path, escape: bool = True) -> bytes:
    """Read a text file as llama-perplexity's `-f` does (binary-identical on POSIX)."""
    with open(path, "rb") as f:
        return perplexity_text(f.read(), escape)
