"""llama-quantize's regexes (std::regex, ECMAScript grammar, regex_search) in Python's `re`.

translate() rewrites a pattern so that Python matches what libstdc++'s std::regex matches, and
reports constructs that std::regex rejects or reads differently, with their column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_ECMA_ESCAPES = set("dDsSwWbBfnrtv0")  # kept as is: same meaning in Python
_POSIX = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "blank": r" \t", "cntrl": r"\x00-\x1f\x7f",
    "digit": "0-9", "d": "0-9", "graph": r"\x21-\x7e", "lower": "a-z", "print": r"\x20-\x7e",
    "punct": r"!-/:-@\[-`{-~", "space": r" \t\n\r\f\v", "s": r" \t\n\r\f\v", "upper": "A-Z",
    "xdigit": "0-9A-Fa-f", "w": "0-9A-Za-z_",
}
_BRACE = re.compile(r"\{(\d+)(,(\d*))?\}")


@dataclass(frozen=True)
class Note:
    column: int  # 0-based offset in the pattern
    severity: str  # "error": std::regex throws (llama-quantize aborts); "warning": meaning differs
    message: str


@dataclass(frozen=True)
class EcmaRegex:
    pattern: str  # as llama-quantize receives it
    python: str  # equivalent Python pattern ("" when invalid)
    regex: re.Pattern | None
    notes: tuple[Note, ...]

    @property
    def error(self) -> Note | None:
        return next((n for n in self.notes if n.severity == "error"), None)

    def search(self, name: str) -> bool:
        return self.regex is not None and self.regex.search(name) is not None


def _escape(ch: str, i: int, pat: str, notes: list[Note], in_class: bool) -> tuple[str, int]:
    """Translate the escape at pat[i] == '\\'; returns (python text, chars consumed)."""
    if i + 1 >= len(pat):
        notes.append(Note(i, "error", "pattern ends with a lone backslash"))
        return "", 1
    c = pat[i + 1]
    if c in _ECMA_ESCAPES or (c.isdigit() and not in_class):
        return "\\" + c, 2
    if c == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", pat[i + 2:i + 4]):
        return pat[i:i + 4], 4
    if c == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", pat[i + 2:i + 6]):
        return pat[i:i + 6], 6
    if c == "c" and i + 2 < len(pat) and pat[i + 2].isalpha():
        return "\\x%02x" % (ord(pat[i + 2]) % 32), 3
    if c.isascii() and c.isalpha():
        notes.append(Note(i, "warning", f"std::regex reads '\\{c}' as a plain '{c}' "
                                        f"(Python and PCRE give it another meaning)"))
    return re.escape(c), 2


def _class(pat: str, i: int, notes: list[Note]) -> tuple[str, int]:
    """Translate a bracket expression starting at pat[i] == '['."""
    start = i
    out = ["["]
    i += 1
    if i < len(pat) and pat[i] == "^":
        out.append("^")
        i += 1
    if i < len(pat) and pat[i] == "]":  # ECMAScript: [] matches nothing, [^] matches anything
        negated = out[-1] == "^"
        notes.append(Note(start, "warning", "'[]' / '[^]' is an empty class in ECMAScript "
                                            "(not a class containing ']'); escape it as '\\]'"))
        return (r"[\s\S]" if negated else "(?!)"), i + 1 - start
    while i < len(pat):
        ch = pat[i]
        if ch == "]":
            out.append("]")
            return "".join(out), i + 1 - start
        if ch == "\\":
            text, n = _escape(ch, i, pat, notes, True)
            out.append(text)
            i += n
            continue
        if ch == "[" and i + 1 < len(pat) and pat[i + 1] in ":.=":
            kind = pat[i + 1]
            end = pat.find(kind + "]", i + 2)
            if end < 0:
                notes.append(Note(i, "error", f"unterminated '[{kind}' in a bracket expression"))
                return "", len(pat) - start
            name = pat[i + 2:end]
            if kind == ":" and name in _POSIX:
                out.append(_POSIX[name])
            elif kind in ".=" and len(name) == 1:
                out.append(re.escape(name))
            else:
                notes.append(Note(i, "error",
                                  f"std::regex does not know the class '[{kind}{name}{kind}]'"))
            i = end + 2
            continue
        out.append("\\" + ch if ch in "[&~|" else ch)
        i += 1
    notes.append(Note(start, "error", "unterminated '[' bracket expression"))
    return "", len(pat) - start


def _group_open(pat: str, i: int, notes: list[Note]) -> tuple[str, int]:
    nxt = pat[i + 1:i + 3]
    if not nxt.startswith("?"):
        return "(", 1
    if nxt in ("?:", "?=", "?!"):
        return "(" + nxt, 3
    what = {"?<": "lookbehind and named groups are", "?P": "named groups are",
            "?>": "atomic groups are", "?#": "comments are"}.get(nxt, "inline flags are")
    notes.append(Note(i, "error", f"{what} not supported by std::regex (ECMAScript): "
                                  f"llama-quantize aborts with a regex_error"))
    return "(" + nxt, 3


def _translate(pat: str) -> tuple[str, list[Note], list[int]]:
    """(Python pattern, notes, source column of every character of the Python pattern)."""
    notes: list[Note] = []
    out: list[str] = []
    cols: list[int] = []
    i = 0
    prev_quant = False
    while i < len(pat):
        ch = pat[i]
        quant = False
        if ch == "\\":
            text, n = _escape(ch, i, pat, notes, False)
        elif ch == "[":
            text, n = _class(pat, i, notes)
        elif ch == "(":
            text, n = _group_open(pat, i, notes)
        elif ch == "{":
            m = _BRACE.match(pat, i)
            if not m:
                notes.append(Note(i, "error", "'{' that is not a {n}, {n,} or {n,m} repeat: "
                                              "std::regex rejects it (escape it as '\\{')"))
                text, n = "\\{", 1
            else:
                text, n, quant = m.group(0), len(m.group(0)), True
        elif ch in "*+?":
            quant = True
            if prev_quant and ch == "+":
                notes.append(Note(i, "error", "possessive quantifier: not ECMAScript"))
            text, n = ch, 1
            if ch == "?" and prev_quant:  # lazy modifier, same in both
                quant = False
        else:
            text, n = ch, 1
        out.append(text)
        cols += [i] * len(text)
        prev_quant = quant
        i += n
    return "".join(out), notes, cols


@lru_cache(maxsize=8192)
def translate(pattern: str) -> EcmaRegex:
    """Compile a llama-quantize regex; cached, so re-planning after an edit costs nothing."""
    python, notes, cols = _translate(pattern)
    regex = None
    if not any(n.severity == "error" for n in notes):
        try:
            regex = re.compile(python, re.ASCII)
        except re.error as e:
            pos = e.pos or 0
            col = cols[pos] if pos < len(cols) else len(pattern)
            notes.append(Note(col, "error", f"invalid regex: {e.msg}"))
    if regex is None:
        python = ""
    return EcmaRegex(pattern, python, regex, tuple(notes))
