"""plan() and the forward pass (config, vocabulary) on type-confused or out-of-range metadata: one
MetadataError naming the key (llama.cpp: "key ... has wrong type"), never a TypeError or
OverflowError."""

from __future__ import annotations

import numpy as np
import pytest

from iqk_studio.gguf.values import MetadataError, meta_float, meta_int, meta_len, meta_str
from iqk_studio.recipe import Recipe, plan
from iqk_studio.recipe.model import stand_in

TENSORS = [("token_embd.weight", (256, 32), "f16"), ("blk.0.attn_v.weight", (256, 256), "f16"),
           ("blk.0.ffn_down.weight", (256, 256), "f16"), ("output.weight", (256, 32), "f16")]
GOOD = {"general.architecture": "llama", "llama.block_count": 1,
        "llama.attention.head_count": 8, "llama.attention.head_count_kv": 8,
        "llama.embedding_length": 256, "tokenizer.ggml.tokens": [f"t{i}" for i in range(32)]}


def plan_with(**changes):
    md = {**GOOD, **{k.replace("__", "."): v for k, v in changes.items()}}
    return plan(stand_in(TENSORS, md), Recipe("Q4_K_M"))


def test_good_metadata_plans():
    p = plan_with()
    assert [e.type for e in p.entries][1] == "q6_K"  # attn_v of a 1-layer llama: use_more_bits


@pytest.mark.parametrize("key,value,match", [
    ("llama.block_count", float("inf"), "must be an integer, got float inf"),
    ("llama.block_count", float("nan"), "must be an integer, got float nan"),
    ("llama.block_count", 2.0, "must be an integer"),
    ("llama.block_count", "four", "must be an integer, got str 'four'"),
    ("llama.block_count", True, "must be an integer"),
    ("llama.block_count", -3, r"= -3 is out of range \(0 to 512\)"),
    ("llama.block_count", 2**40, "out of range"),
    ("llama.expert_count", 513, "out of range"),
    ("llama.attention.head_count", ["a", "b"], "must be an integer, got array"),
    ("llama.attention.head_count", np.array([1.5], np.float32), "must be an integer"),
    ("llama.embedding_length", float("-inf"), "must be an integer, got float -inf"),
    ("tokenizer.ggml.tokens", 7, "must be an array of strings, got int 7"),
    ("tokenizer.ggml.tokens", "hello", "must be an array of strings"),
    ("tokenizer.ggml.tokens", np.arange(3), "must be an array of strings"),
    ("general.architecture", 5, "must be a string, got int 5"),
    ("general.architecture", ["llama"], "must be a string, got array"),
])
def test_type_confusion_names_the_key(key, value, match):
    md = {**GOOD, key: value}
    if key == "tokenizer.ggml.tokens":
        md.pop("llama.vocab_size", None)
    with pytest.raises(MetadataError, match=match) as e:
        plan(stand_in(TENSORS, md), Recipe("Q4_K_M"))
    assert key in str(e.value)


def test_per_layer_arrays_give_layer_0():
    p = plan_with(llama__attention__head_count=np.array([8, 4], np.int32))
    assert p.entries  # llama.cpp's get_key_or_arr: layer 0's value


def test_typed_reads():
    md = {"i": 7, "f": 0.5, "s": "x", "a": ["a"], "n": np.arange(3, dtype=np.int32),
          "inf": float("inf"), "u": np.uint32(3)}
    assert meta_int(md, "i") == 7 and meta_int(md, "u") == 3 and meta_int(md, "absent", 4) == 4
    assert meta_float(md, "f") == 0.5 and meta_float(md, "i") == 7.0
    assert meta_str(md, "s") == "x" and meta_len(md, "a", str) == 1
    assert meta_len(md, "n", "iu") == 3 and meta_len(md, "absent") is None
    with pytest.raises(MetadataError, match="inf must be finite"):
        meta_float(md, "inf")
    with pytest.raises(MetadataError, match="must be a number"):
        meta_float(md, "s")
    with pytest.raises(MetadataError, match="array of numbers"):
        meta_len(md, "a", "f")
    long = {"k": "x" * 10_000}
    with pytest.raises(MetadataError) as e:
        meta_int(long, "k")
    assert len(str(e.value)) < 200


@pytest.mark.parametrize("key,value,match", [
    ("llama.embedding_length", float("inf"), "llama.embedding_length must be an integer"),
    ("llama.block_count", "four", "llama.block_count must be an integer, got str 'four'"),
    ("llama.attention.layer_norm_rms_epsilon", float("nan"), "epsilon must be finite"),
    ("llama.rope.freq_base", "x", "llama.rope.freq_base must be a number"),
    ("llama.attention.head_count", ["a"], "head_count must be an integer or integer array"),
    ("tokenizer.ggml.bos_token_id", float("inf"), "bos_token_id must be an integer"),
    ("tokenizer.ggml.add_bos_token", np.array([1, 0]), "add_bos_token must be a bool"),
])
def test_forward_config_names_the_key(key, value, match):
    from iqk_studio.engine.model import config_from_metadata

    md = {**GOOD, "llama.attention.layer_norm_rms_epsilon": 1e-5, key: value}
    with pytest.raises(MetadataError, match=match):
        config_from_metadata(md, [t[0] for t in TENSORS], (256, 32))


@pytest.mark.parametrize("key,value,match", [
    ("tokenizer.ggml.tokens", 7, "tokens must be an array of strings"),
    ("tokenizer.ggml.tokens", [], "tokens is missing or empty"),
    ("tokenizer.ggml.model", np.arange(2), "tokenizer.ggml.model must be a string"),
    ("tokenizer.ggml.pre", 3, "tokenizer.ggml.pre must be a string"),
    ("tokenizer.ggml.scores", "x", "scores must be an array of numbers"),
    ("tokenizer.ggml.token_type", float("inf"), "token_type must be an array of numbers"),
    ("tokenizer.ggml.token_type", np.zeros(0, np.int32), "token_type has 0 < 32 entries"),
    ("tokenizer.ggml.bos_token_id", "1", "bos_token_id must be an integer"),
    ("tokenizer.ggml.add_space_prefix", "yes", "add_space_prefix must be a bool"),
])
def test_vocabulary_names_the_key(key, value, match):
    from iqk_studio.engine.tokenizer import parse_vocab

    md = {**GOOD, "tokenizer.ggml.model": "llama", key: value}
    with pytest.raises(MetadataError, match=match):
        parse_vocab(md)
