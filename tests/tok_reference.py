"""Slow, obvious reference for llama.cpp's gpt-2 byte-level BPE: a plain-Python transcription of
the hand-written GPT-2 pre-tokenizer scanner (unicode.cpp) and the rank-ordered merge loop
(llm_tokenizer_bpe_session), with Unicode categories from Python's unicodedata.
"""

from __future__ import annotations

import heapq
import unicodedata

from iqk_studio.engine.tok_bpe import BYTE_TO_UNICODE

# llama.cpp's unicode_set_whitespace
WHITESPACE = {*range(0x9, 0xE), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028,
              0x2029, 0x202F, 0x205F, 0x3000}


def _cls(c: str | None) -> str:
    """'' out of range, 'w' whitespace, 'L' letter, 'N' number, 'o' anything else."""
    if c is None:
        return ""
    if ord(c) in WHITESPACE:
        return "w"
    cat = unicodedata.category(c)[0]
    return cat if cat in "LN" else "o"


def gpt2_split(text: str) -> list[str]:
    """Pieces of the GPT-2 regex
    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"""
    n, pos, out = len(text), 0, []

    def at(i):
        return text[i] if i < n else None

    while pos < n:
        start, c = pos, text[pos]
        if c == "'" and pos + 1 < n:
            if text[pos + 1] in "stmd":
                out.append(text[pos:pos + 2])
                pos += 2
                continue
            if pos + 2 < n and text[pos + 1:pos + 3] in ("re", "ve", "ll"):
                out.append(text[pos:pos + 3])
                pos += 3
                continue
        k = _cls(at(pos + 1)) if c == " " else _cls(c)
        if k in ("L", "N", "o"):
            pos += c == " "
            while _cls(at(pos)) == k:
                pos += 1
            out.append(text[start:pos])
            continue
        nws = 0
        while _cls(at(pos + nws)) == "w":
            nws += 1
        if nws > 1 and pos + nws < n:
            pos += nws - 1
        elif nws > 0:
            pos += nws
        else:
            pos += 1
        out.append(text[start:pos])
    return out


def llama3_split(text: str, max_digits: int = 3) -> list[str]:
    """Pieces of the LLAMA3 regex (QWEN2 with max_digits=1), as unicode.cpp's scanner cuts them:
    (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+
    |\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"""
    n, pos, out = len(text), 0, []

    def at(i):
        return text[i] if i < n else None

    while pos < n:
        start, c = pos, text[pos]
        if c == "'" and pos + 1 < n:
            if text[pos + 1] in "sStTmMdD":
                out.append(text[pos:pos + 2])
                pos += 2
                continue
            if pos + 2 < n and text[pos + 1:pos + 3].lower() in ("re", "ve", "ll"):
                out.append(text[pos:pos + 3])
                pos += 3
                continue
        k = _cls(c)
        if c not in "\r\n" and k != "N" and (k == "L" or _cls(at(pos + 1)) == "L"):
            pos += 1
            while _cls(at(pos)) == "L":
                pos += 1
        elif k == "N":
            while _cls(at(pos)) == "N" and pos - start < max_digits:
                pos += 1
        elif (_cls(at(pos + 1)) if c == " " else k) == "o" or (c == " " and pos + 1 == n):
            pos += c == " "
            while _cls(at(pos)) == "o":
                pos += 1
            while at(pos) in ("\r", "\n"):
                pos += 1
        else:
            nws, last_nl = 0, -1
            while _cls(at(pos + nws)) == "w":
                if text[pos + nws] in "\r\n":
                    last_nl = pos + nws + 1
                nws += 1
            if last_nl > 0:
                pos = last_nl
            elif nws > 1 and pos + nws < n:
                pos += nws - 1
            elif nws > 0:
                pos += nws
            else:
                pos += 1
        out.append(text[start:pos])
    return out


def _runs(pieces: list[str], member, max_len: int = 0) -> list[str]:
    """Isolated split of each piece by maximal runs of `member` chars (at most max_len long)."""
    out = []
    for p in pieces:
        i = 0
        while i < len(p):
            j, inside = i, member(p[i])
            while j < len(p) and member(p[j]) == inside and (not inside or not max_len
                                                                or j - i < max_len):
                j += 1
            out.append(p[i:j])
            i = j
    return out


def _cat(c: str) -> str:
    return unicodedata.category(c)[0]


def default_split(text: str) -> list[str]:
    """llama.cpp's `default` list: [\\p{P}\\$\\+<=>\\^~\\|]+ ; the GPT-2 regex ; \\p{N}+ ;
    [0-9][0-9][0-9] (a 3-digit match only when 3 ASCII digits follow)."""
    pieces = _runs([text], lambda c: _cat(c) == "P" or c in "$+<=>^~|") if text else []
    pieces = [q for p in pieces for q in gpt2_split(p)]
    pieces = _runs(pieces, lambda c: _cat(c) == "N")
    out = []
    for p in pieces:
        i, start = 0, 0
        while i + 3 <= len(p):
            if all(ch in "0123456789" for ch in p[i:i + 3]):
                if i > start:
                    out.append(p[start:i])
                out.append(p[i:i + 3])
                i = start = i + 3
            else:
                i += 1
        if start < len(p):
            out.append(p[start:])
    return out


def smollm_split(text: str) -> list[str]:
    """llama.cpp's starcoder/smollm list: \\p{N} (each digit alone) ; the GPT-2 regex."""
    pieces = _runs([text], lambda c: _cat(c) == "N", max_len=1) if text else []
    return [q for p in pieces for q in gpt2_split(p)]


class RefBpe:
    def __init__(self, tokens: list[str], merges: list[str], split=gpt2_split,
                 ignore_merges: bool = False):
        self.split, self.ignore_merges = split, ignore_merges
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.ranks = {}
        for i, m in enumerate(merges):
            p = m.find(" ", 1)
            self.ranks[(m[:p], m[p + 1:])] = i
        self.cache: dict[str, list[int]] = {}

    def word(self, w: str) -> list[int]:
        if w in self.cache:
            return self.cache[w]
        if self.ignore_merges and w in self.vocab:
            return [self.vocab[w]]
        syms = list(w)
        alive = [True] * len(syms)
        nxt = list(range(1, len(syms))) + [-1]
        prv = list(range(-1, len(syms) - 1))
        heap = []

        def add(a, b):
            if a >= 0 and b >= 0 and (syms[a], syms[b]) in self.ranks:
                heapq.heappush(heap, (self.ranks[(syms[a], syms[b])], a, b, syms[a] + syms[b]))

        for i in range(1, len(syms)):
            add(i - 1, i)
        while heap:
            _, a, b, text = heapq.heappop(heap)
            if not alive[a] or not alive[b] or syms[a] + syms[b] != text:
                continue
            syms[a], alive[b] = text, False
            nxt[a] = nxt[b]
            if nxt[b] >= 0:
                prv[nxt[b]] = a
            add(prv[a], a)
            add(a, nxt[a])
        ids = []
        for s, ok in zip(syms, alive):
            if ok:
                ids.extend([self.vocab[s]] if s in self.vocab else
                           [self.vocab[ch] for ch in s if ch in self.vocab])
        self.cache[w] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        ids = []
        for piece in self.split(text):
            enc = "".join(BYTE_TO_UNICODE[b] for b in piece.encode("utf-8"))
            ids.extend(self.word(enc))
        return ids
