"""llama.cpp's SentencePiece tokenizer (llm_tokenizer_spm): greedy highest-score bigram merging
over UTF-8 characters, ties to the leftmost pair, byte fallback `<0xXX>`. Numba kernels.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def _hash(buf, a, b):
    # FNV-1a over buf[a:b]
    h = np.uint64(0xCBF29CE484222325)
    for i in range(a, b):
        h = (h ^ np.uint64(buf[i])) * np.uint64(0x100000001B3)
    return h


@njit(nogil=True, cache=True)
def _lookup(table, tok_bytes, tok_off, buf, a, b):
    """Token id whose text equals buf[a:b], or -1."""
    mask = table.shape[0] - 1
    slot = np.int64(_hash(buf, a, b) & np.uint64(mask))
    n = b - a
    while True:
        t = table[slot]
        if t < 0:
            return -1
        s = tok_off[t]
        if tok_off[t + 1] - s == n:
            same = True
            for i in range(n):
                if tok_bytes[s + i] != buf[a + i]:
                    same = False
                    break
            if same:
                return t
        slot = (slot + 1) & mask


@njit(nogil=True, cache=True)
def _build_table(table, tok_bytes, tok_off):
    # table: int32[cap] (cap a power of two >= 2 * n_tokens), filled with -1.
    # Tokens are inserted in id order and a later duplicate replaces an earlier one, as
    # llama.cpp's `token_to_id[word] = i` does.
    mask = table.shape[0] - 1
    for t in range(tok_off.shape[0] - 1):
        a, b = tok_off[t], tok_off[t + 1]
        slot = np.int64(_hash(tok_bytes, a, b) & np.uint64(mask))
        while True:
            u = table[slot]
            if u < 0:
                table[slot] = t
                break
            n = tok_off[u + 1] - tok_off[u]
            if n == b - a:
                same = True
                for i in range(n):
                    if tok_bytes[tok_off[u] + i] != tok_bytes[a + i]:
                        same = False
                        break
                if same:
                    table[slot] = t
                    break
            slot = (slot + 1) & mask


@njit(nogil=True, cache=True)
def _heap_push(hk, hn, n, key, size):
    # min-heap on key = (inverted score bits << 32) | left: highest score, then leftmost first
    i = n
    while i > 0:
        p = (i - 1) >> 1
        if hk[p] <= key:
            break
        hk[i], hn[i] = hk[p], hn[p]
        i = p
    hk[i], hn[i] = key, size
    return n + 1


@njit(nogil=True, cache=True)
def _heap_pop(hk, hn, n):
    """Remove the top entry and store it in slot n-1 (read it there); returns n-1."""
    n -= 1
    top_k, top_n = hk[0], hn[0]
    key, size = hk[n], hn[n]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and hk[c + 1] < hk[c]:
            c += 1
        if key <= hk[c]:
            break
        hk[i], hn[i] = hk[c], hn[c]
        i = c
    hk[i], hn[i] = key, size
    hk[n], hn[n] = top_k, top_n
    return n


@njit(nogil=True, cache=True)
def _try_add(table, tok_bytes, tok_off, score_key, max_len, buf, sym_a, sym_n,
             hk, hn, nh, left, right):
    if left < 0 or right < 0:
        return nh
    size = sym_n[left] + sym_n[right]
    if size > max_len:
        return nh
    a = sym_a[left]
    t = _lookup(table, tok_bytes, tok_off, buf, a, a + size)
    if t < 0:
        return nh
    return _heap_push(hk, hn, nh, (np.uint64(score_key[t]) << np.uint64(32)) | np.uint64(left),
                      size)


@njit(nogil=True, cache=True)
def _spm_encode(out, buf, table, tok_bytes, tok_off, score_key, byte_tok, max_len):
    # buf: uint8[n] UTF-8 text with ' ' already replaced by U+2581; out: int32[>= n].
    # Returns the number of ids written, or -1 - byte when a byte has no byte token.
    n = buf.shape[0]
    sym_a = np.empty(n, np.int64)
    sym_n = np.empty(n, np.int64)
    prv = np.empty(n, np.int64)
    nxt = np.empty(n, np.int64)
    ns = 0
    off = 0
    while off < n:  # split into UTF-8 characters (length from the lead byte's high nibble)
        hi = buf[off] >> 4
        ln = 1 if hi < 12 else (2 if hi < 14 else (3 if hi == 14 else 4))
        ln = min(ln, n - off)
        sym_a[ns], sym_n[ns] = off, ln
        prv[ns] = ns - 1
        off += ln
        nxt[ns] = -1 if off == n else ns + 1
        ns += 1
    cap = 3 * ns + 4
    hk = np.empty(cap, np.uint64)
    hn = np.empty(cap, np.int64)
    nh = 0
    for i in range(1, ns):
        nh = _try_add(table, tok_bytes, tok_off, score_key, max_len, buf, sym_a, sym_n,
                      hk, hn, nh, i - 1, i)
    while nh > 0:
        nh = _heap_pop(hk, hn, nh)
        left, size = np.int64(hk[nh] & np.uint64(0xFFFFFFFF)), hn[nh]
        # llama.cpp skips a pair when either side changed length; lengths only grow, so the
        # pair (left, nxt[left]) has the recorded size exactly when neither side changed
        right = nxt[left]
        if sym_n[left] == 0 or right < 0 or sym_n[left] + sym_n[right] != size:
            continue
        sym_n[left] += sym_n[right]
        sym_n[right] = 0
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prv[nxt[right]] = left
        nh = _try_add(table, tok_bytes, tok_off, score_key, max_len, buf, sym_a, sym_n,
                      hk, hn, nh, prv[left], left)
        nh = _try_add(table, tok_bytes, tok_off, score_key, max_len, buf, sym_a, sym_n,
                      hk, hn, nh, left, nxt[left])
    n_out = 0
    i = 0 if ns > 0 else -1
    while i >= 0:
        a = sym_a[i]
        t = _lookup(table, tok_bytes, tok_off, buf, a, a + sym_n[i])
        if t >= 0:
            out[n_out] = t
            n_out += 1
        else:  # a character that never formed a token: emit its bytes
            for j in range(a, a + sym_n[i]):
                bt = byte_tok[buf[j]]
                if bt < 0:
                    return -1 - np.int64(buf[j])
                out[n_out] = bt
                n_out += 1
        i = nxt[i]
    return n_out


class SpmVocab:
    """Token texts as a hash table the numba kernels can search, plus scores and byte tokens."""

    def __init__(self, tokens_utf8: list[bytes], scores: np.ndarray):
        n = len(tokens_utf8)
        self.tok_off = np.zeros(n + 1, np.int64)
        self.tok_off[1:] = np.cumsum([len(t) for t in tokens_utf8])
        self.tok_bytes = np.frombuffer(b"".join(tokens_utf8), np.uint8).copy()
        cap = 1 << max(4, int(2 * n).bit_length())
        self.table = np.full(cap, -1, np.int32)
        _build_table(self.table, self.tok_bytes, self.tok_off)
        self.scores = np.ascontiguousarray(scores, np.float32)
        # order-preserving uint32 image of each score, inverted so that a min-heap pops the
        # highest score first
        bits = (self.scores + np.float32(0)).view(np.uint32)  # -0.0 ties with 0.0
        sortable = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))
        self.score_key = (np.uint32(0xFFFFFFFF) - sortable).astype(np.uint32)
        self.max_len = int(np.diff(self.tok_off).max()) if n else 0
        # byte fallback as llama_vocab::byte_to_token: "<0xXX>", else the 1-byte string
        self.byte_tok = np.full(256, -1, np.int32)
        for b in range(256):
            t = self.lookup(f"<0x{b:02X}>".encode())
            self.byte_tok[b] = t if t >= 0 else self.lookup(bytes([b]))

    def lookup(self, text: bytes) -> int:
        buf = np.frombuffer(text, np.uint8)
        return int(_lookup(self.table, self.tok_bytes, self.tok_off, buf, 0, buf.shape[0]))

    def encode(self, text: bytes) -> np.ndarray:
        """Ids for one raw-text fragment (spaces already escaped to U+2581), as int32."""
        buf = np.frombuffer(text, np.uint8)
        out = np.empty(buf.shape[0], np.int32)
        n = _spm_encode(out, buf, self.table, self.tok_bytes, self.tok_off, self.score_key,
                        self.byte_tok, self.max_len)
        if n < 0:
            raise ValueError(f"the vocabulary has no byte token for byte 0x{-1 - n:02X} "
                             f"(neither '<0x{-1 - n:02X}>' nor the raw byte)")
        return out[:n]
