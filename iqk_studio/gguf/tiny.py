"""A tiny random-weight llama-architecture GGUF with a real byte-level BPE vocabulary, and a text to
evaluate it on: made in a fraction of a second, no download, what `iqk-studio --self-test` uses."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from iqk_studio.gguf.values import ValueType
from iqk_studio.gguf.writer import KV, TensorSpec, write_gguf

N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_LAYER, N_MERGES = 64, 4, 2, 128, 2, 120
EOT = "<|endoftext|>"
_WORDS = ("the of and to in is was for on as with by that from at his it an were are which "
          "this be or has had first one their its new after who they have her two been other "
          "when there all during into school time may years more most only over city some world "
          "would where later up such used many can state about national out known university "
          "united then made river game season team album film series war").split()


def sample_text(n_words: int = 3000, seed: int = 0) -> str:
    """Sentences of common English words in paragraphs, the same for the same seed."""
    rng = np.random.default_rng(seed)
    words, out = rng.choice(_WORDS, n_words), []
    for i in range(0, n_words, 12):
        s = " ".join(words[i:i + 12])
        out.append(s[:1].upper() + s[1:] + ".")
    return "\n\n".join(" ".join(out[i:i + 6]) for i in range(0, len(out), 6)) + "\n"


def _byte_chars() -> list[str]:
    # GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest for U+0100...
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def bpe_vocab(text: str, n_merges: int = N_MERGES) -> tuple[list[str], list[str]]:
    """(tokens, merges): the 256 byte tokens, then the `n_merges` most frequent pair merges of
    the text's words (GPT-2 style: a word carries its leading space), then EOT."""
    bc = _byte_chars()
    words = Counter(" " + w for w in text.split())
    seqs = {w: [bc[b] for b in w.encode()] for w in words}
    tokens, merges = list(bc), []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for w, n in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[a, b] += n
        if not pairs:
            break
        (a, b), _n = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append(f"{a} {b}")
        tokens.append(a + b)
        for w, s in seqs.items():
            i, out = 0, []
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return tokens + [EOT], merges


def _weights(n_vocab: int, seed: int) -> dict[str, np.ndarray]:
    """numpy-shaped (n_out, n_in) float32 weights, scaled so every layer moves the logits."""
    rng = np.random.default_rng(seed)
    hd = N_EMBD // N_HEAD

    def mat(n_out, n_in, s=1.0):
        return (rng.standard_normal((n_out, n_in)) * s / np.sqrt(n_in)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.3 * rng.standard_normal(n)).astype(np.float32)

    t = {"token_embd.weight": mat(n_vocab, N_EMBD, 8.0)}
    for il in range(N_LAYER):
        p = f"blk.{il}."
        t.update({p + "attn_norm.weight": norm(N_EMBD),
                  p + "attn_q.weight": mat(N_HEAD * hd, N_EMBD, 3.0),
                  p + "attn_k.weight": mat(N_HEAD_KV * hd, N_EMBD, 3.0),
                  p + "attn_v.weight": mat(N_HEAD_KV * hd, N_EMBD),
                  p + "attn_output.weight": mat(N_EMBD, N_HEAD * hd),
                  p + "ffn_norm.weight": norm(N_EMBD),
                  p + "ffn_gate.weight": mat(N_FF, N_EMBD, 2.0),
                  p + "ffn_up.weight": mat(N_FF, N_EMBD, 2.0),
                  p + "ffn_down.weight": mat(N_EMBD, N_FF)})
    t["output_norm.weight"] = norm(N_EMBD)
    t["output.weight"] = mat(n_vocab, N_EMBD, 1.5)
    return t


def write_tiny_model(path, text: str | None = None, seed: int = 0) -> Path:
    """Write the tiny model (F32, 2 layers, n_embd 64, a BPE vocabulary learnt from `text`, by
    default sample_text()) to `path` and return it."""
    tokens, merges = bpe_vocab(sample_text() if text is None else text)
    n_vocab, a = len(tokens), "llama."
    ttype = np.ones(n_vocab, np.int32)
    ttype[-1] = 3  # EOT is a control token
    f32, u32 = ValueType.FLOAT32, ValueType.UINT32
    kvs = [KV("general.architecture", "llama"), KV("general.name", "iqk-studio tiny"),
           KV("general.file_type", 0, u32),
           KV(a + "context_length", 2048, u32), KV(a + "embedding_length", N_EMBD, u32),
           KV(a + "block_count", N_LAYER, u32), KV(a + "feed_forward_length", N_FF, u32),
           KV(a + "attention.head_count", N_HEAD, u32),
           KV(a + "attention.head_count_kv", N_HEAD_KV, u32),
           KV(a + "rope.freq_base", 10000.0, f32),
           KV(a + "attention.layer_norm_rms_epsilon", 1e-5, f32),
           KV(a + "vocab_size", n_vocab, u32),
           KV("tokenizer.ggml.model", "gpt2"), KV("tokenizer.ggml.pre", "gpt-2"),
           KV("tokenizer.ggml.tokens", tokens),
           KV("tokenizer.ggml.token_type", ttype, ValueType.ARRAY, ValueType.INT32),
           KV("tokenizer.ggml.merges", merges),
           KV("tokenizer.ggml.bos_token_id", n_vocab - 1, u32),
           KV("tokenizer.ggml.eos_token_id", n_vocab - 1, u32),
           KV("tokenizer.ggml.add_bos_token", True)]
    w = _weights(n_vocab, seed)
    specs = [TensorSpec(n, tuple(reversed(x.shape)), 0) for n, x in w.items()]  # 0: F32
    return write_gguf(path, kvs, specs, (x.tobytes() for x in w.values()))
