"""A seeded, structure-aware fuzzer of GGUF headers, run through `inspect` and `plan` in-process.

Its own little encoder (independent of iqk_studio.gguf) builds a llama-like header and records
where every length, count, dimension, type id and offset lies, so each case can corrupt one
chosen field of one class. A case passes when the reader or plan refuses it with one of the
project's error classes (short message naming the file) or accepts it and every output (text,
strict JSON) is produced; anything else - another exception, a message over 500 characters - is
a failure. Files are sparse: half the cases are 64 GiB (a real big model's room for a corrupted
length), the data section is never written.

Run as a script (tests/test_gguf_fuzz.py does, in a child, to measure its peak RSS):
    python tests/gguf_fuzz.py --seed 1 --cases 4000 --seconds 20 --dir /tmp/x [--real F.gguf]
prints one JSON line: cases run, outcomes per class, failures, peak RSS before and after.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import struct
import sys
import time
from dataclasses import dataclass, field

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<B",
       U64: "<Q", I64: "<q", F64: "<d"}
HUGE = 64 << 30  # apparent size of the sparse "big model" files
CLASSES = ("bytes", "truncate", "lengths", "counts", "dims", "offsets", "alignment", "type_ids",
           "confusion", "utf8")
MAX_MESSAGE = 500


# ------------------------------------------------------------------------------ the encoder

@dataclass
class KV:
    key: bytes
    vtype: int
    value: object  # scalar, bytes (string), or (item type, [items])


@dataclass
class Tensor:
    name: bytes
    dims: list[int]
    type_id: int
    offset: int


@dataclass
class Header:
    kvs: list[KV]
    tensors: list[Tensor]
    version: int = 3
    fields: list[tuple[int, int, str]] = field(default_factory=list)  # (offset, size, kind)

    def encode(self) -> bytes:
        out = bytearray()
        self.fields = []

        def put(fmt, v, kind=None):
            if kind:
                self.fields.append((len(out), struct.calcsize(fmt), kind))
            out.extend(struct.pack(fmt, v))

        def string(b: bytes, kind: str):
            put("<Q", len(b), kind)
            out.extend(b)

        def value(vtype, v, kind):
            if vtype == STR:
                string(v, kind)
            elif vtype == ARR:
                itype, items = v
                put("<I", itype, "itype")
                put("<Q", len(items), "count.arr")
                for x in items:
                    value(itype, x, "len.item")
            else:
                put(FMT[vtype], v)

        out.extend(b"GGUF")
        put("<I", self.version)
        put("<Q", len(self.tensors), "count.tensors")
        put("<Q", len(self.kvs), "count.kv")
        for kv in self.kvs:
            string(kv.key, "len.key")
            put("<I", kv.vtype, "vtype")
            value(kv.vtype, kv.value, "len.str")
        for t in self.tensors:
            string(t.name, "len.name")
            put("<I", len(t.dims), "ndims")
            for d in t.dims:
                put("<Q", d, "ne")
            put("<I", t.type_id, "ttype")
            put("<Q", t.offset, "offset")
        return bytes(out)


# ggml type id -> (block elements, bytes per block) for the few base types used
TYPES = {0: (1, 4), 1: (1, 2), 8: (32, 34), 12: (256, 144)}


def base_header() -> tuple[Header, int]:
    """A 2-layer llama with a 64-token vocabulary; returns it and the end of its data section
    relative to the data start."""
    n_vocab, n_embd, n_ff = 64, 256, 512
    kvs = [KV(b"general.architecture", STR, b"llama"), KV(b"general.name", STR, b"fuzz"),
           KV(b"general.file_type", U32, 1), KV(b"llama.block_count", U32, 2),
           KV(b"llama.context_length", U32, 4096), KV(b"llama.embedding_length", U32, n_embd),
           KV(b"llama.feed_forward_length", U32, n_ff),
           KV(b"llama.attention.head_count", U32, 8), KV(b"llama.attention.head_count_kv", U32, 4),
           KV(b"llama.rope.freq_base", F32, 10000.0),
           KV(b"llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
           KV(b"tokenizer.ggml.model", STR, b"gpt2"),
           KV(b"tokenizer.ggml.tokens", ARR, (STR, [f"t{i}".encode() for i in range(n_vocab)])),
           KV(b"tokenizer.ggml.scores", ARR, (F32, [float(i) for i in range(n_vocab)])),
           KV(b"tokenizer.ggml.token_type", ARR, (I32, [1] * n_vocab)),
           KV(b"tokenizer.ggml.merges", ARR, (STR, [b"t 1", b"t 2", b"t1 0"])),
           KV(b"tokenizer.ggml.bos_token_id", U32, 1)]
    shapes = [("token_embd.weight", [n_embd, n_vocab], 1)]
    for il in range(2):
        p = f"blk.{il}."
        shapes += [(p + "attn_norm.weight", [n_embd], 0), (p + "attn_q.weight", [n_embd, n_embd], 1),
                   (p + "attn_k.weight", [n_embd, 128], 1), (p + "attn_v.weight", [n_embd, 128], 12),
                   (p + "attn_output.weight", [n_embd, n_embd], 1),
                   (p + "ffn_norm.weight", [n_embd], 0), (p + "ffn_gate.weight", [n_embd, n_ff], 8),
                   (p + "ffn_up.weight", [n_embd, n_ff], 8), (p + "ffn_down.weight", [n_ff, n_embd], 12)]
    shapes += [("output_norm.weight", [n_embd], 0), ("output.weight", [n_embd, n_vocab], 8)]
    tensors, pos = [], 0
    for name, dims, tid in shapes:
        tensors.append(Tensor(name.encode(), dims, tid, pos))
        blk, nb = TYPES[tid]
        n = 1
        for d in dims:
            n *= d
        pos += -(-(n // blk * nb) // 32) * 32
    return Header(kvs, tensors), pos


# ---------------------------------------------------------------------------- mutations

def interesting(rng: random.Random, near: int, size: int) -> int:
    v = rng.choice([0, 1, 2, near - 1, near + 1, near * 2, 255, 2**16 - 1, 2**16, 2**31 - 1, 2**31,
                    2**32 - 1, 2**32, 2**40, 2**62, 2**63, 2**64 - 1, size, size // 2,
                    rng.randrange(2**64), rng.randrange(1 << 24)])
    return v % 2**64


def patch(buf: bytearray, fields, kinds: tuple[str, ...], rng, size: int) -> bool:
    choices = [f for f in fields if f[2] in kinds]
    if not choices:
        return False
    off, n, _ = rng.choice(choices)
    old = int.from_bytes(buf[off:off + n], "little")
    buf[off:off + n] = (interesting(rng, old, size) % 2**(8 * n)).to_bytes(n, "little")
    return True


CONFUSED_KEYS = [b"general.architecture", b"llama.block_count", b"llama.attention.head_count",
                 b"llama.attention.head_count_kv", b"llama.embedding_length", b"llama.expert_count",
                 b"llama.vocab_size", b"tokenizer.ggml.tokens", b"tokenizer.ggml.scores",
                 b"tokenizer.ggml.token_type", b"tokenizer.ggml.merges", b"general.file_type",
                 b"general.alignment", b"split.count", b"split.no", b"split.tensors.count",
                 b"llama.rope.freq_base", b"tokenizer.ggml.bos_token_id"]


def confused_value(rng: random.Random) -> tuple[int, object]:
    inf, nan = float("inf"), float("nan")
    return rng.choice([
        (U8, 200), (I8, -7), (U16, 65535), (I16, -1), (U32, 0), (U32, 2**32 - 1), (I32, -3),
        (I32, 2**31 - 1), (F32, inf), (F32, -inf), (F32, nan), (F32, 2.5), (F32, 1e30),
        (BOOL, 1), (U64, 2**63), (U64, 2**64 - 1), (I64, -(2**63)), (F64, nan), (F64, -inf),
        (STR, b""), (STR, b"four"), (STR, b"\xff\xfe"), (STR, b"x" * 5000),
        (ARR, (STR, [])), (ARR, (STR, [b"a", b"\xc3"])), (ARR, (I32, [])),
        (ARR, (I32, [-5, 7])), (ARR, (U32, [2**32 - 1])), (ARR, (F32, [nan, inf])),
        (ARR, (BOOL, [1, 0])), (ARR, (U8, [1] * 3)), (ARR, (F64, [1.5])),
    ])


def bad_utf8(rng: random.Random, b: bytes) -> bytes:
    junk = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xf8\x88\x80\x80\x80",
                       b"\x00", b"\xe2\x82"])
    i = rng.randrange(len(b) + 1)
    return b[:i] + junk + b[i:]


def mutate(cls: str, rng: random.Random, real: tuple[bytes, int] | None = None
           ) -> tuple[bytes, int]:
    """(header bytes, apparent file size) of one case of class `cls`; `real`: (header, size)
    of a real file that the byte-level classes corrupt half of the time."""
    if real is not None and cls in ("bytes", "truncate") and rng.random() < 0.5:
        head = bytearray(real[0])
        if cls == "truncate":
            cut = rng.randrange(len(head))
            return bytes(head[:cut]), cut
        for _ in range(rng.randint(1, 5)):
            head[rng.randrange(len(head))] = rng.randrange(256)
        return bytes(head), real[1]
    h, data_size = base_header()
    big = rng.random() < 0.5
    if cls == "alignment":
        vt, v = rng.choice([(U32, 0), (U32, 1), (U32, 3), (U32, 24), (U32, 64), (U32, 2**31),
                            (U32, 2**32 - 1), (U64, 32), (I32, 32), (STR, b"32"), (F32, 32.0)])
        h.kvs.insert(rng.randrange(len(h.kvs) + 1), KV(b"general.alignment", vt, v))
    elif cls == "confusion":
        key = rng.choice(CONFUSED_KEYS)
        vt, v = confused_value(rng)
        h.kvs = [kv for kv in h.kvs if kv.key != key]
        h.kvs.insert(rng.randrange(len(h.kvs) + 1), KV(key, vt, v))
    elif cls == "utf8":
        what = rng.choice(["key", "name", "value", "token"])
        if what == "key":
            kv = rng.choice(h.kvs)
            kv.key = bad_utf8(rng, kv.key)
        elif what == "name":
            t = rng.choice(h.tensors)
            t.name = bad_utf8(rng, t.name)
        elif what == "value":
            kv = rng.choice([kv for kv in h.kvs if kv.vtype == STR])
            kv.value = bad_utf8(rng, kv.value)
        else:
            toks = next(kv for kv in h.kvs if kv.key == b"tokenizer.ggml.tokens").value[1]
            i = rng.randrange(len(toks))
            toks[i] = bad_utf8(rng, toks[i])
    elif cls == "offsets":
        t = rng.choice(h.tensors)
        other = rng.choice(h.tensors)
        t.offset = rng.choice([t.offset + rng.randrange(1, 32), other.offset, 2**64 - 1,
                               HUGE, data_size, data_size - 32, 2**63, rng.randrange(2**40)])
    elif cls == "type_ids" and rng.random() < 0.5:
        rng.choice(h.tensors).type_id = rng.choice([4, 5, 31, 39, 40, 99, 255, 2**31, 2**32 - 1,
                                                    rng.randrange(200)])
    if cls == "dims" and rng.random() < 0.5:
        t = rng.choice(h.tensors)
        t.dims = rng.choice([[], [1] * 5, t.dims + [1], [0], [t.dims[0], 0],
                             [2**40, 2**40], [2**63, 2], [t.dims[0] + 1] + t.dims[1:]])
    head = bytearray(h.encode())
    data_start = -(-len(head) // 32) * 32
    size = HUGE if big else data_start + data_size
    if cls == "bytes":
        for _ in range(rng.randint(1, 5)):
            head[rng.randrange(len(head))] = rng.randrange(256)
    elif cls == "truncate":
        cut = rng.randrange(len(head)) if rng.random() < 0.8 else rng.randrange(size)
        return bytes(head[:cut]), cut
    elif cls == "lengths":
        patch(head, h.fields, ("len.key", "len.str", "len.name", "len.item"), rng, size)
    elif cls == "counts":
        patch(head, h.fields, ("count.kv", "count.tensors", "count.arr"), rng, size)
    elif cls == "dims":
        patch(head, h.fields, ("ndims", "ne"), rng, size)
    elif cls == "type_ids":
        patch(head, h.fields, ("ttype", "vtype", "itype"), rng, size)
    return bytes(head), size


# ------------------------------------------------------------------------------- running

def project_errors() -> tuple[type, ...]:
    from iqk_studio.engine.model import ModelError
    from iqk_studio.engine.tokenizer import UnsupportedTokenizer
    from iqk_studio.gguf.reader import GGUFError
    from iqk_studio.gguf.values import MetadataError

    return GGUFError, MetadataError, ModelError, UnsupportedTokenizer


def run_case(path: str) -> str:
    """Open, inspect (text and strict JSON), plan (text and strict JSON), then read what a
    perplexity run reads first (the forward pass's config, the vocabulary) from one file; the
    project's errors propagate, from the reader first."""
    from iqk_studio.commands._output import dump_json
    from iqk_studio.commands.inspect import format_text, summarize
    from iqk_studio.commands.plan import plan_json, print_plan
    from iqk_studio.engine.model import config_from_metadata
    from iqk_studio.engine.tokenizer import parse_vocab
    from iqk_studio.gguf.reader import open_model
    from iqk_studio.recipe import Recipe, plan

    with open_model(path) as m:
        s = summarize(m)
        format_text(s)
        dump_json(s, io.StringIO())
        recipe = Recipe("Q4_K_M")
        p = plan(m, recipe)  # a MetadataError propagates: "refused by plan"
        print_plan(p, io.StringIO())
        dump_json(plan_json(p, recipe, path), io.StringIO())
        emb = m.tensors.get("token_embd.weight")
        config_from_metadata(m.metadata, m.tensors, tuple(emb.shape) if emb else None)
        parse_vocab(m.metadata)
    return "accepted"


def write_case(path: str, head: bytes, size: int) -> None:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)  # sparse: nothing of the data section is written


def real_header(path: str) -> tuple[bytes, int]:
    from iqk_studio.gguf.reader import open_model

    with open_model(path) as m:
        n = m.files[0].data_offset
    with open(path, "rb") as f:
        return f.read(n), os.path.getsize(path)


def fuzz(seed: int, cases: int, seconds: float, folder: str, real_file: str | None = None
         ) -> dict:
    errors = project_errors()
    rng = random.Random(seed)
    by_class: dict[str, dict[str, int]] = {c: {} for c in CLASSES}
    failures = []
    path = os.path.join(folder, "fuzz.gguf")
    real = real_header(real_file) if real_file else None
    t0 = time.perf_counter()
    n = 0
    while n < cases and time.perf_counter() - t0 < seconds:
        cls = CLASSES[n % len(CLASSES)]
        head, size = mutate(cls, random.Random(rng.randrange(2**63)), real)
        write_case(path, head, size)
        try:
            outcome = run_case(path)
        except errors as e:
            outcome = f"refused: {type(e).__name__}"
            msg = str(e)
            named = msg.startswith(path) or type(e).__name__ != "GGUFError"  # others: a key
            if len(msg) > MAX_MESSAGE or not named:
                failures.append({"case": n, "class": cls, "error": "bad message",
                                 "length": len(msg), "start": msg[:160]})
        except Exception as e:  # noqa: BLE001 - any other exception is what the fuzzer looks for
            failures.append({"case": n, "class": cls, "error": type(e).__name__,
                             "message": str(e)[:300], "size": size, "header": head.hex()[:400]})
            outcome = "FAILED"
        by_class[cls][outcome] = by_class[cls].get(outcome, 0) + 1
        n += 1
    os.unlink(path)
    return {"seed": seed, "cases": n, "seconds": round(time.perf_counter() - t0, 2),
            "by_class": by_class, "failures": failures[:20], "n_failures": len(failures)}


def rss_peak() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=4000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--real", help="a real GGUF whose header the byte-level classes also corrupt")
    a = ap.parse_args()
    import iqk_studio.commands.inspect  # noqa: F401 - imports done before the baseline
    import iqk_studio.commands.plan  # noqa: F401

    fuzz(a.seed + 1, 20, 60, a.dir)  # warm-up: first use of every code path and import
    base = rss_peak()
    if sys.platform.startswith("linux"):
        # a runaway allocation becomes a MemoryError (a failure) instead of swapping the machine
        with open("/proc/self/status") as f:
            data = next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmData:"))
        hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
        limit = data + (2 << 30)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    result = fuzz(a.seed, a.cases, a.seconds, a.dir, a.real)
    result["rss_base"] = base
    result["rss_peak"] = rss_peak()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
