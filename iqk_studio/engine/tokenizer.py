"""Tokenizer from a GGUF's own vocabulary, producing exactly the ids ik_llama.cpp's llama_tokenize
gives: special-token partition, BOS/EOS rules, SentencePiece (`llama`) or byte-level BPE (`gpt2`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from iqk_studio.engine.tok_text import (  # noqa: F401  (re-exported: the text helpers)
    llama_utf8,
    perplexity_text,
    process_escapes,
    read_perplexity_text,
)
from iqk_studio.gguf.values import MetadataError, meta_int, meta_len, meta_str, short

# llama_token_attr bits (include/llama.h)
ATTR_UNKNOWN, ATTR_UNUSED, ATTR_NORMAL, ATTR_CONTROL = 1, 2, 4, 8
ATTR_USER_DEFINED, ATTR_BYTE, ATTR_LSTRIP, ATTR_RSTRIP = 16, 32, 128, 256
# tokenizer.ggml.token_type value -> attribute (0 undefined, anything unknown -> undefined)
_TYPE_ATTR = {1: ATTR_NORMAL, 2: ATTR_UNKNOWN, 3: ATTR_CONTROL, 4: ATTR_USER_DEFINED,
              5: ATTR_UNUSED, 6: ATTR_BYTE}
_ASCII_WS = " \t\n\v\f\r"  # C isspace()

# Texts llama.cpp forces to CONTROL (EOT/EOG/EOM/FIM detection by text, llama-vocab.cpp load())
_EOG_TEXTS = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
              "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>",
              "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>",
              "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>"}
_FIM_TEXTS = {
    "fim_pre": {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
                "▁<PRE>", "<|code_prefix|>", "<|prefix|>"},
    "fim_suf": {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
                "▁<SUF>", "<|code_suffix|>", "<|suffix|>"},
    "fim_mid": {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
                "▁<MID>", "<|code_middle|>", "<|middle|>"},
    "fim_pad": {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"},
    "fim_rep": {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"},
    "fim_sep": {"<|file_sep|>"},
}
_FORCED_USER_DEFINED = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"}

SUPPORTED_MODELS = ("llama", "gpt2")


class UnsupportedTokenizer(ValueError):
    """The GGUF's tokenizer model or pre-tokenizer type is not one we reproduce exactly."""


@dataclass(frozen=True)
class VocabInfo:
    """What llama.cpp's vocab loader decides from the metadata, parsed once."""

    model: str  # tokenizer.ggml.model
    pre: str  # tokenizer.ggml.pre ("default" when missing)
    tokens: tuple[str, ...]
    attrs: np.ndarray  # int32 llama_token_attr bits per token
    scores: np.ndarray | None
    bos_id: int
    eos_id: int
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    ignore_merges: bool


def _meta_id(md: Mapping, key: str, default: int, n: int) -> int:
    v = meta_int(md, key, None, -(2**63), 2**64 - 1)
    return default if v is None or not 0 <= v < n else v


def _flag(md: Mapping, key: str, default: bool) -> bool:
    v = md.get(key, default)
    if not isinstance(v, (bool, int, np.integer)):
        raise MetadataError(f"metadata {key} must be a bool, got {short(v)}")
    return bool(v)


def _attrs(md: Mapping, tokens: Sequence[str]) -> np.ndarray:
    n = len(tokens)
    tt = md.get("tokenizer.ggml.token_type")
    attrs = np.full(n, ATTR_NORMAL, np.int32)
    if tt is not None:
        if meta_len(md, "tokenizer.ggml.token_type", "iu") < n:
            raise MetadataError(f"metadata tokenizer.ggml.token_type has {len(tt)} < {n} entries")
        attrs[:] = [_TYPE_ATTR.get(int(t), 0) for t in np.asarray(tt)[:n]]
    index = {t: i for i, t in enumerate(tokens)}
    forced = set(_EOG_TEXTS) | {"<|eom_id|>"}
    for name, texts in _FIM_TEXTS.items():
        if md.get(f"tokenizer.ggml.{name}_token_id") is None:
            forced |= texts
    for t in forced & index.keys():
        attrs[index[t]] |= ATTR_CONTROL
    for t in _FORCED_USER_DEFINED & index.keys():
        attrs[index[t]] = ATTR_USER_DEFINED
    # gpt-oss / solar-open: "<|end|>" is not EOG but user-defined; gemma4: "</s>" is normal
    if "<|end|>" in index and (({"<|return|>", "<|call|>"} <= index.keys())
                               or ({"<|calls|>", "<|flush|>"} <= index.keys())):
        attrs[index["<|end|>"]] = ATTR_USER_DEFINED
    if "<|tool_response>" in index and "</s>" in index:
        attrs[index["</s>"]] = ATTR_NORMAL
    _model_attrs(md, index, attrs)
    return attrs


def _model_attrs(md: Mapping, index: dict, attrs: np.ndarray) -> None:
    # per-model LSTRIP/RSTRIP, keyed by names as llama.cpp does
    name = str(md.get("general.name", "")).lower()
    pre = str(md.get("tokenizer.ggml.pre", ""))
    arch = str(md.get("general.architecture", ""))
    if any(s in pre for s in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) or any(
            s in arch for s in ("nomic-bert-moe", "jina-bert-v3")):
        if "<mask>" in index:
            attrs[index["<mask>"]] |= ATTR_LSTRIP
    elif "phi-3" in name or "phi3" in name:
        special = (attrs & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) != 0
        attrs[special] |= ATTR_RSTRIP
        for t, on in (("</s>", True), ("<unk>", False), ("<s>", False), ("<|endoftext|>", False)):
            if t in index:
                attrs[index[t]] = attrs[index[t]] | ATTR_RSTRIP if on else \
                    attrs[index[t]] & ~ATTR_RSTRIP
    elif "modern-bert" in name and "[MASK]" in index:
        attrs[index["[MASK]"]] |= ATTR_LSTRIP


def parse_vocab(md: Mapping) -> VocabInfo:
    """Read `tokenizer.ggml.*` as llama_vocab::impl::load does; refuse what we cannot reproduce."""
    from iqk_studio.engine.tok_bpe import ADD_BOS, IGNORE_MERGES, PRE_TYPES

    model = meta_str(md, "tokenizer.ggml.model", None)
    if model is None:
        raise UnsupportedTokenizer("the model has no tokenizer (tokenizer.ggml.model is missing)")
    pre = meta_str(md, "tokenizer.ggml.pre", "") or "default"
    if model not in SUPPORTED_MODELS:
        raise UnsupportedTokenizer(f"tokenizer model {short(model)} is not supported "
                                   f"(supported: {', '.join(SUPPORTED_MODELS)})")
    if model == "gpt2" and pre not in PRE_TYPES:
        raise UnsupportedTokenizer(f"pre-tokenizer type {short(pre)} (tokenizer.ggml.pre) of a "
                                   f"gpt2 vocabulary is not supported (supported: "
                                   f"{', '.join(sorted(PRE_TYPES))})")
    if not meta_len(md, "tokenizer.ggml.tokens", str):
        raise MetadataError("metadata tokenizer.ggml.tokens is missing or empty")
    raw = md["tokenizer.ggml.tokens"]
    tokens = tuple(t if t else f"[EMPTY_{i}]" for i, t in enumerate(raw))
    n = len(tokens)
    scores = md.get("tokenizer.ggml.scores")
    if scores is not None:
        meta_len(md, "tokenizer.ggml.scores", "iuf")
        scores = np.asarray(scores, np.float32)
        if scores.shape[0] < n:
            raise MetadataError(f"metadata tokenizer.ggml.scores has {scores.shape[0]} < {n} "
                                "entries")
        scores = scores[:n]
    if model == "llama":
        bos, eos, add_bos, space_prefix, ignore_merges = 1, 2, True, True, False
    else:
        bos = -1 if pre in ("glm4", "chatglm-bpe") else 11
        eos, add_bos, space_prefix, ignore_merges = 11, pre in ADD_BOS, False, pre in IGNORE_MERGES
    space_prefix = _flag(md, "tokenizer.ggml.add_space_prefix", space_prefix)
    add_bos = _flag(md, "tokenizer.ggml.add_bos_token", add_bos)
    add_eos = _flag(md, "tokenizer.ggml.add_eos_token", False)
    return VocabInfo(model, pre, tokens, _attrs(md, tokens), scores,
                     _meta_id(md, "tokenizer.ggml.bos_token_id", bos, n),
                     _meta_id(md, "tokenizer.ggml.eos_token_id", eos, n),
                     add_bos, add_eos, space_prefix, ignore_merges)


def _partition(text: str, vocab: VocabInfo, special: list[int], parse_special: bool) -> list:
    """tokenizer_st_partition: cut literal occurrences of special tokens (longest first) out of
    the text. Returns raw spans (start, end) and token ids (int), in order."""
    frags: list = [(0, len(text))] if text else []
    if not parse_special:  # user-defined tokens are cut out even without parse_special
        special = [t for t in special if not vocab.attrs[t] & (ATTR_CONTROL | ATTR_UNKNOWN)]
    for tid in _occurring(text, special, vocab.tokens):
        attr = int(vocab.attrs[tid])
        tok = vocab.tokens[tid]
        lstrip, rstrip, n = attr & ATTR_LSTRIP, attr & ATTR_RSTRIP, len(tok)
        out = []
        for f in frags:
            if isinstance(f, int):
                out.append(f)
                continue
            a, b = f
            while True:
                m = text.find(tok, a, b)
                if m < 0:
                    out.append((a, b))
                    break
                e = m
                if lstrip:
                    while e > a and text[e - 1] in _ASCII_WS:
                        e -= 1
                if e > a:
                    out.append((a, e))
                out.append(tid)
                a = m + n
                if rstrip:
                    while a < b and text[a] in _ASCII_WS:
                        a += 1
                if a >= b:
                    break
        frags = out
    return frags


def _occurring(text: str, ids: list[int], tokens: Sequence[str]) -> list[int]:
    """The ids (order kept) whose token text occurs in `text`: a quick filter that looks only at
    the positions of a token's first character when that character is rare."""
    if not text:
        return []
    chars, where, out = set(text), {}, []
    for tid in ids:
        tok = tokens[tid]
        c = tok[0]
        if c not in chars:
            continue
        if c not in where:
            where[c] = _positions(text, c) if text.count(c) <= 256 else None
        pos = where[c]
        if (pos is None and tok in text) or (pos is not None and
                                             any(text.startswith(tok, p) for p in pos)):
            out.append(tid)
    return out


def _positions(text: str, c: str) -> list[int]:
    out, p = [], text.find(c)
    while p >= 0:
        out.append(p)
        p = text.find(c, p + 1)
    return out


class Tokenizer:
    """llama_tokenize over a GGUF vocabulary: `encode(text, add_special, parse_special)`."""

    def __init__(self, vocab: VocabInfo, merges: Sequence[str] | None = None):
        self.vocab = vocab
        self.n_vocab = len(vocab.tokens)
        self.bos_id, self.eos_id = vocab.bos_id, vocab.eos_id
        self.add_bos, self.add_eos = vocab.add_bos, vocab.add_eos
        mask = ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN
        ids = np.flatnonzero(vocab.attrs & mask)
        lengths = np.array([len(vocab.tokens[i].encode("utf-8", "surrogateescape"))
                            for i in ids], np.int64)
        # longest first; llama.cpp's std::sort leaves equal lengths in unspecified order
        self._special = [int(i) for i in ids[np.lexsort((ids, -lengths))]] if len(ids) else []
        if vocab.model == "llama":
            from iqk_studio.engine.tok_spm import SpmVocab

            scores = vocab.scores if vocab.scores is not None else np.zeros(self.n_vocab)
            self._spm = SpmVocab([t.encode("utf-8", "surrogateescape") for t in vocab.tokens],
                                 scores)  # llama.cpp: score 0 for every token when absent
        else:
            from iqk_studio.engine.tok_bpe import BpeModel

            if merges is None:
                raise ValueError("cannot find tokenizer merges (tokenizer.ggml.merges) in the "
                                 "gpt2 vocabulary")
            self._bpe = BpeModel(list(vocab.tokens), list(merges), vocab.pre,
                                 vocab.ignore_merges)

    @classmethod
    def from_metadata(cls, md: Mapping) -> Tokenizer:
        vocab = parse_vocab(md)
        if md.get("tokenizer.ggml.merges") is not None:
            meta_len(md, "tokenizer.ggml.merges", str)
        return cls(vocab, md.get("tokenizer.ggml.merges"))

    @classmethod
    def from_model(cls, model) -> Tokenizer:
        """From an open GGUFModel (iqk_studio.gguf.reader.open_model)."""
        return cls.from_metadata(model.metadata)

    def encode(self, text: str | bytes, add_special: bool = True,
               parse_special: bool = False) -> np.ndarray:
        """Token ids as llama_tokenize(text, add_special, parse_special) returns them."""
        if isinstance(text, bytes | bytearray):
            text = bytes(text).decode("utf-8", "surrogateescape")
        elif not isinstance(text, str):
            raise TypeError(f"encode() takes str or bytes, not {type(text).__name__}")
        v = self.vocab
        frags = _partition(text, v, self._special, parse_special)
        out: list = []
        if add_special and v.add_bos:
            if v.bos_id < 0:
                raise ValueError("the vocabulary asks for a BOS token but has none")
            out.append(np.array([v.bos_id], np.int32))
        if v.model == "llama":
            self._encode_spm(text, frags, out)
        else:
            self._encode_bpe(text, frags, out)
        if add_special and v.add_eos:
            out.append(np.array([v.eos_id], np.int32))
        return np.concatenate(out) if out else np.zeros(0, np.int32)

    def _encode_spm(self, text: str, frags: list, out: list) -> None:
        prev_special = True  # a space prefix goes before the first fragment too
        for f in frags:
            if isinstance(f, int):
                out.append(np.array([f], np.int32))
                prev_special = True
                continue
            s = text[f[0]:f[1]]
            if self.vocab.add_space_prefix and prev_special:
                s = " " + s
            out.append(self._spm.encode(s.replace(" ", "\u2581").encode("utf-8",
                                                                        "surrogateescape")))
            prev_special = False

    def _encode_bpe(self, text: str, frags: list, out: list) -> None:
        raw = [llama_utf8(text[f[0]:f[1]]) for f in frags if not isinstance(f, int)]
        ids = iter(self._bpe.encode_many(raw) if raw else ())
        for f in frags:
            out.append(np.array([f] if isinstance(f, int) else next(ids), np.int32))

    def decode(self, ids, special: bool = False) -> str:
        """Best-effort detokenization (control tokens only when `special`)."""
        v, buf = self.vocab, bytearray()
        for t in np.asarray(ids, np.int64).ravel():
            if not 0 <= t < self.n_vocab:
                raise ValueError(f"token id {t} is out of range (n_vocab {self.n_vocab})")
            attr, s = int(v.attrs[t]), v.tokens[t]
            if attr & ATTR_CONTROL and not special:
                continue
            if attr & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN):
                buf += s.encode("utf-8", "surrogateescape")
            elif v.model == "llama":
                if attr & ATTR_BYTE and len(s) == 6 and s.startswith("<0x"):
                    buf.append(int(s[3:5], 16))
                else:
                    buf += s.replace("\u2581", " ").encode("utf-8", "surrogateescape")
            else:
                from iqk_studio.engine.tok_bpe import UNICODE_TO_BYTE

                for c in s:
                    b = UNICODE_TO_BYTE.get(c)
                    buf += c.encode("utf-8", "surrogateescape") if b is None else bytes([b])
        out = buf.decode("utf-8", "replace")
        if v.model == "llama" and v.add_space_prefix and out.startswith(" "):
            out = out[1:]
        return out
