"""Tokenizer throughput on wiki.test.raw: `python bench/bench_tokenizer.py [SHARED_DIR]`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from iqk_studio.demo import demo_model_path
from iqk_studio.engine.tokenizer import Tokenizer, read_perplexity_text
from iqk_studio.gguf.reader import open_model


def main() -> None:
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[2] / "shared"
    text = read_perplexity_text(shared / "data" / "wiki.test.raw")
    models = [("gemma3-270m (llama/SPM)", demo_model_path()),
              ("llama-spm (one 1.3 MB fragment)",
               shared / "refs" / "tokens" / "vocab" / "ggml-vocab-llama-spm.gguf"),
              ("gpt-2 (gpt2/BPE)", shared / "refs" / "tokens" / "vocab" / "ggml-vocab-gpt-2.gguf")]
    print(f"wiki.test.raw for llama-perplexity: {len(text)} bytes")
    for name, path in models:
        t0 = time.perf_counter()
        with open_model(path) as m:
            tok = Tokenizer.from_model(m)
        t1 = time.perf_counter()
        tok.encode(text[:1000])  # compile / load the numba kernels
        t2 = time.perf_counter()
        ids = tok.encode(text)
        t3 = time.perf_counter()
        print(f"{name:34s} load {t1 - t0:6.2f} s  first call {t2 - t1:5.2f} s  "
              f"encode {t3 - t2:5.2f} s  {len(ids)} tokens  {len(text) / (t3 - t2) / 1e6:.2f} MB/s")


if __name__ == "__main__":
    main()
