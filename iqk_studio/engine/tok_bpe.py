"""Byte-level BPE (`tokenizer.ggml.model = "gpt2"`) rebuilt with HF `tokenizers` from the GGUF's
tokens and merges, with the pre-tokenizer regexes llama.cpp uses for each `tokenizer.ggml.pre`.
"""

from __future__ import annotations

import re

from tokenizers import Regex, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

# Regexes as in llama.cpp src/llama-vocab.cpp (llm_tokenizer_bpe), applied in sequence; every
# match and every gap between matches becomes a piece ("isolated").
GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3_RE = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
             r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = LLAMA3_RE.replace(r"\p{N}{1,3}", r"\p{N}")
QWEN35_RE = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
             r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
DEFAULT_RES = (r"[\p{P}\$\+<=>\^~\|]+", GPT2_RE, r"\p{N}+", r"[0-9][0-9][0-9]")

# internal pre-tokenizer type -> regex list
PRE_REGEXES = {
    "default": DEFAULT_RES,
    "gpt2": (GPT2_RE,),
    "llama3": (LLAMA3_RE,),
    "qwen2": (QWEN2_RE,),
    "qwen35": (QWEN35_RE,),
    "starcoder": (r"\p{N}", GPT2_RE),
}

# `tokenizer.ggml.pre` value -> internal type, as llama_vocab::impl::load maps them (only the
# types whose regexes we reproduce; anything else is refused by name).
PRE_TYPES = {
    "default": "default",
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "laguna", "falcon3", "falcon-h1",
                     "pixtral", "midm-2.0", "lfm2", "jina-v5-nano", "dbrx", "smaug-bpe",
                     "glm4", "chatglm-bpe"), "llama3"),
    **dict.fromkeys(("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es",
                     "jina-v2-de", "a.x-4.0", "mellum", "modern-bert", "exaone4", "mpt", "olmo",
                     "jais", "trillion", "granite-docling"), "gpt2"),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "openpangu", "f2llmv2", "megrez",
                     "stablelm2", "hunyuan", "solar-open", "grok-2"), "qwen2"),
    "qwen35": "qwen35",
    **dict.fromkeys(("starcoder", "refact", "command-r", "cohere2_moe", "smollm", "codeshell",
                     "exaone", "minerva-7b", "mellum2"), "starcoder"),
}
# pre names whose branch also sets ignore_merges = true / add_bos = true in llama.cpp
IGNORE_MERGES = {"llama3", "llama-v3", "llama-bpe", "laguna", "falcon3", "falcon-h1", "pixtral",
                 "midm-2.0", "lfm2", "jina-v5-nano"}
ADD_BOS = IGNORE_MERGES


# Code points that llama.cpp's Unicode tables (src/unicode-data.cpp, Unicode 15) leave unassigned
# while tokenizers' Oniguruma (Unicode 16) classes them as letters or digits: Garay, Todhri,
# Sunuwar, Egyptian Hieroglyphs Ext-A, ... Found by comparing the two over all code points.
_NEWER_THAN_LLAMA = re.compile(
    "[\u1c89-\u1c8a\ua7cb-\ua7cd\ua7da-\ua7dc\U000105c0-\U000105f3\U00010d40-\U00010d65"
    "\U00010d6f-\U00010d85\U00010ec2-\U00010ec4\U00011380-\U00011389\U0001138b\U0001138e"
    "\U00011390-\U000113b5\U000113b7\U000113d1\U000113d3\U000116d0-\U000116e3"
    "\U00011bc0-\U00011be0\U00011bf0-\U00011bf9\U00013460-\U000143fa\U00016100-\U0001611d"
    "\U00016130-\U00016139\U00016d40-\U00016d6c\U00016d70-\U00016d79\U00018cff"
    "\U0001ccf0-\U0001ccf9\U0001e5d0-\U0001e5ed\U0001e5f0-\U0001e5fa]")
_UNASSIGNED = "\u0378"  # unassigned everywhere: neither letter, digit nor space


def _byte_to_unicode() -> dict[int, str]:
    # GPT-2 bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100...
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(0x100 + n)
            n += 1
    return table


BYTE_TO_UNICODE = _byte_to_unicode()
UNICODE_TO_BYTE = {c: b for b, c in BYTE_TO_UNICODE.items()}


def _splitter(kind: str):
    res = (GPT2_RE + r"|\s+",) if kind == "gpt2" else PRE_REGEXES[kind]
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r), behavior="isolated",
                                                         invert=False) for r in res])


def _pre_tokenizer(kind: str):
    if kind == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return pre_tokenizers.Sequence([_splitter(kind), _bytelevel()])


def _bytelevel():
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)


def _split_merge(m: str) -> tuple[str, str] | None:
    # llama.cpp: split at the first space at index >= 1
    pos = m.find(" ", 1)
    return None if pos < 0 else (m[:pos], m[pos + 1:])


class BpeModel:
    """HF `tokenizers` BPE over the GGUF vocabulary for one pre-tokenizer type."""

    def __init__(self, tokens: list[str], merges: list[str], pre: str, ignore_merges: bool):
        self.kind = PRE_TYPES[pre]
        vocab = {t: i for i, t in enumerate(tokens)}
        pairs = []
        for m in merges:
            p = _split_merge(m)
            # HF refuses merges whose parts or result are not tokens; llama.cpp would merge
            # them and then drop the bytes of the unknown symbol (inexact only for such vocabs)
            if p and p[0] in vocab and p[1] in vocab and p[0] + p[1] in vocab:
                pairs.append(p)
        bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=ignore_merges,
                         fuse_unk=False, byte_fallback=False)
        self.hf = HFTokenizer(bpe)
        self.hf.pre_tokenizer = _pre_tokenizer(self.kind)
        self._pieces = HFTokenizer(bpe)  # for text we split ourselves
        self._pieces.pre_tokenizer = _bytelevel()
        self._splitter = _splitter(self.kind)

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        """Ids for raw-text fragments (no special-token handling)."""
        if any(_NEWER_THAN_LLAMA.search(t) for t in texts):
            return [self._encode_newer_unicode(t) for t in texts]
        if len(texts) == 1:
            return [self.hf.encode(texts[0], add_special_tokens=False).ids]
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def _encode_newer_unicode(self, text: str) -> list[int]:
        # split a stand-in text where those code points are unassigned, as llama.cpp sees them,
        # then encode the original pieces at the same (code point) offsets
        stand_in = _NEWER_THAN_LLAMA.sub(_UNASSIGNED, text)
        spans = [span for _, span in self._splitter.pre_tokenize_str(stand_in)]
        if not spans:
            return []
        pieces = [text[a:b] for a, b in spans]
        return self._pieces.encode(pieces, is_pretokenized=True, add_special_tokens=False).ids
