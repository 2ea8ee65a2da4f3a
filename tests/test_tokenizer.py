"""Tokenizer against ik_llama.cpp oracles: llama.cpp's tokenizer test vectors, the Gemma 3 ids of
wiki.test.raw, and a plain-Python transcription of llama.cpp's gpt-2 BPE on the same text."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
from tok_reference import RefBpe, default_split, gpt2_split, llama3_split, smollm_split

from iqk_studio.engine.tokenizer import (
    Tokenizer,
    UnsupportedTokenizer,
    parse_vocab,
    perplexity_text,
    process_escapes,
    read_perplexity_text,
)
from iqk_studio.gguf.reader import open_model


@cache
def _metadata(path) -> dict:
    with open_model(path) as m:
        return dict(m.metadata)


@cache
def _tokenizer(path) -> Tokenizer:
    return Tokenizer.from_metadata(_metadata(path))


def _vectors(shared, name):
    base = shared("refs", "tokens", "vocab", f"ggml-vocab-{name}.gguf")
    inp = base.with_suffix(".gguf.inp").read_text(encoding="utf-8")
    out = base.with_suffix(".gguf.out").read_text(encoding="utf-8")
    texts = inp.split("\n__ggml_vocab_test__\n")
    assert texts[-1] == ""
    lines = out.split("\n")
    assert lines[-1] == ""
    return base, texts[:-1], [[int(x) for x in ln.split()] for ln in lines[:-1]]


@pytest.mark.parametrize("name", ["gpt-2", "llama-spm", "phi-3"])
def test_llama_cpp_vectors(shared, name):
    path, texts, expected = _vectors(shared, name)
    assert len(texts) == len(expected) == 46
    tok = _tokenizer(path)
    for text, ids in zip(texts, expected):
        got = tok.encode(text, add_special=False)
        assert got.dtype == np.int32
        assert got.tolist() == ids, f"{name}: {text!r}"


@pytest.mark.parametrize("name", ["gpt-2", "llama-spm"])
def test_decode_round_trip(shared, name):
    path, texts, _ = _vectors(shared, name)
    tok = _tokenizer(path)
    for text in texts:
        assert tok.decode(tok.encode(text, add_special=False)) == text


@pytest.fixture(scope="module")
def gemma():
    from iqk_studio.demo import demo_model_path

    try:
        path = demo_model_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return _tokenizer(path)


def test_gemma_wiki_ids_exact(shared, gemma):
    ref = np.array(json.loads(shared("refs", "tokens",
                                     "gemma3-270m.wiki.test.raw.ids.json").read_text()))
    text = shared("data", "wiki.test.raw").read_bytes()
    ids = gemma.encode(text)
    assert ids.shape == ref.shape and np.array_equal(ids, ref)
    # llama-perplexity drops the final newline: one id fewer, 570 chunks of 512 as in its log
    ppl = gemma.encode(read_perplexity_text(shared("data", "wiki.test.raw")))
    assert np.array_equal(ppl, ref[:-1])
    log = shared("refs", "ppl", "gemma3-270m-f32.wiki.c512.log").read_text()
    assert f"calculating perplexity over {len(ppl) // 512} chunks" in log


def test_gemma_special_tokens(gemma):
    assert (gemma.bos_id, gemma.eos_id, gemma.add_bos, gemma.n_vocab) == (2, 1, True, 262144)
    t = "<start_of_turn>user\n"
    plain = gemma.encode(t, add_special=False).tolist()
    assert 105 not in plain  # control token text is not special without parse_special
    assert gemma.encode(t, add_special=False, parse_special=True).tolist()[0] == 105
    # user-defined tokens ("\n", runs of spaces) are cut out even without parse_special
    assert plain[-1] == gemma.vocab.tokens.index("\n")
    # "</s>" is user-defined in Gemma's vocab but llama.cpp forces it to control (EOG text)
    assert gemma.vocab.tokens.index("</s>") not in gemma.encode("a</s>b", False).tolist()
    assert gemma.decode(gemma.encode("Hello  world\n\nX")) == "Hello  world\n\nX"


def test_tiny_model_vocab_flags(shared):
    md = _metadata(shared("refs", "ppl", "tiny", "tiny-qwen2.gguf"))
    assert (md["tokenizer.ggml.model"], md["tokenizer.ggml.pre"]) == ("gpt2", "gpt-2")
    tok = Tokenizer.from_metadata(md)
    assert not tok.add_bos  # no add_bos_token key: BPE default false, chunks are fed unchanged
    assert (tok.bos_id, tok.eos_id, tok.n_vocab) == (50256, 50256, 50257)


ODD = ("héllo ÀÉÎ 123 ４５６ ١٢٣ 𝟘𝟙 Ⅻ ½ x²  \u00a0\u2003 a\t\tb \u0378\u0379 'S 'll 'LL 'Re "
       "\U0001F600  \r\n \n\n  ﷽ 漢字 한국어 ∀x∈ℝ \u200b\u0301 e\u0301 12345678 x!!\n\n y "
       "\r\r\n  \t\n z ? ")


@pytest.mark.slow
def test_gpt2_bpe_on_whole_wiki_matches_reference(shared):
    """tiny-qwen2's vocabulary (gpt2 / gpt-2) on all of wiki.test.raw as llama-perplexity
    prepares it: HF-based encoder == transcription of llama.cpp."""
    path = shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")
    md = _metadata(path)
    text = read_perplexity_text(shared("data", "wiki.test.raw"))
    ids = _tokenizer(path).encode(text)
    ref = RefBpe(md["tokenizer.ggml.tokens"], md["tokenizer.ggml.merges"])
    assert ids.tolist() == ref.encode(text.decode("utf-8"))
    assert len(ids) == 283286  # 553 chunks of 512


@pytest.mark.parametrize("pre", ["gpt-2", "llama-bpe", "qwen2", "smollm", "default"])
def test_bpe_pre_tokenizers_match_reference(shared, pre):
    """The gpt-2 vocabulary under each pre-tokenizer (ignore_merges for llama-bpe): HF regexes
    == transcription of unicode.cpp's scanners and regex lists."""
    md = dict(_metadata(shared("refs", "tokens", "vocab", "ggml-vocab-gpt-2.gguf")))
    md["tokenizer.ggml.pre"] = pre
    tok = Tokenizer.from_metadata(md)
    split = {"gpt-2": gpt2_split, "llama-bpe": llama3_split, "smollm": smollm_split,
             "qwen2": lambda t: llama3_split(t, 1), "default": default_split}[pre]
    ref = RefBpe(md["tokenizer.ggml.tokens"], md["tokenizer.ggml.merges"], split,
                 ignore_merges=pre == "llama-bpe")
    wiki = read_perplexity_text(shared("data", "wiki.test.raw"))[:200_000].decode("utf-8")
    for text in (ODD, wiki):
        assert tok.encode(text, add_special=False).tolist() == ref.encode(text)


def test_empty_text(shared):
    spm = _tokenizer(shared("refs", "tokens", "vocab", "ggml-vocab-llama-spm.gguf"))
    assert spm.encode("").tolist() == [1]
    assert spm.encode("", add_special=False).tolist() == []
    bpe = _tokenizer(shared("refs", "tokens", "vocab", "ggml-vocab-gpt-2.gguf"))
    assert bpe.encode("").tolist() == []
    assert bpe.encode(b"", add_special=False).dtype == np.int32


def test_invalid_utf8_bytes(shared):
    bpe = _tokenizer(shared("refs", "tokens", "vocab", "ggml-vocab-gpt-2.gguf"))
    # llama.cpp: every byte that does not start a well-formed sequence is one U+FFFD
    assert bpe.encode(b"a\xe2\x82b").tolist() == bpe.encode("a\ufffd\ufffdb").tolist()
    assert bpe.encode(b"\xc0\x80!").tolist() == bpe.encode("\x00!").tolist()  # overlong NUL


def test_spm_space_prefix_and_bytes(shared):
    tok = _tokenizer(shared("refs", "tokens", "vocab", "ggml-vocab-llama-spm.gguf"))
    assert tok.add_bos and tok.vocab.add_space_prefix
    # a character the vocabulary lacks falls back to its UTF-8 bytes <0xXX> (id = 3 + byte)
    ids = tok.encode("\U0001F9FF", add_special=False).tolist()
    assert ids[-4:] == [3 + b for b in "\U0001F9FF".encode()]
    assert tok.encode(b"a\xff", add_special=False).tolist()[-1] == 3 + 0xFF


def test_unsupported_tokenizers_are_named(shared):
    md = dict(_metadata(shared("refs", "tokens", "vocab", "ggml-vocab-gpt-2.gguf")))
    md["tokenizer.ggml.pre"] = "no-such-pre"
    with pytest.raises(UnsupportedTokenizer, match="'no-such-pre'"):
        Tokenizer.from_metadata(md)
    md["tokenizer.ggml.model"] = "t5"
    with pytest.raises(UnsupportedTokenizer, match="'t5'"):
        parse_vocab(md)
    with pytest.raises(UnsupportedTokenizer, match="tokenizer.ggml.model"):
        parse_vocab({})
    md["tokenizer.ggml.model"], md["tokenizer.ggml.pre"] = "gpt2", "gpt-2"
    del md["tokenizer.ggml.merges"]
    with pytest.raises(ValueError, match="merges"):
        Tokenizer.from_metadata(md)


def test_bpe_flags_by_pre_type(shared):
    md = dict(_metadata(shared("refs", "tokens", "vocab", "ggml-vocab-gpt-2.gguf")))
    for pre, bos, ignore in [("llama-bpe", True, True), ("qwen2", False, False),
                             ("smollm", False, False), ("default", False, False)]:
        md["tokenizer.ggml.pre"] = pre
        v = parse_vocab(md)
        assert (v.add_bos, v.ignore_merges) == (bos, ignore), pre
        Tokenizer(v, md["tokenizer.ggml.merges"]).encode("Hello 12345 world!")
    md["tokenizer.ggml.add_bos_token"] = False
    md["tokenizer.ggml.pre"] = "llama-bpe"
    assert not parse_vocab(md).add_bos


def test_process_escapes():
    assert process_escapes(rb"a\nb\tc\\d\'\"\r") == b"a\nb\tc\\d'\"\r"
    assert process_escapes(rb"\x41\x4a\xZZ\q\x4") == b"AJ\\xZZ\\q\\x4"
    assert process_escapes(rb"\x 9\x-1\x+f") == b"\t\xff\x0f"  # strtol's space and sign
    assert process_escapes(b"end\\") == b"end\\"
    assert perplexity_text(b"x\\n\n\n") == b"x\n\n"
    assert perplexity_text(b"x\\n\n", escape=False) == b"x\\n"


def test_phi3_rstrip_and_from_model(shared):
    # general.name "Phi3": llama.cpp sets RSTRIP on the special tokens, so whitespace after a
    # parsed special token is dropped; the next fragment gets the SPM space prefix again
    with open_model(shared("refs", "tokens", "vocab", "ggml-vocab-phi-3.gguf")) as m:
        tok = Tokenizer.from_model(m)
    user = tok.vocab.tokens.index("<|user|>")
    ids = tok.encode("<|user|>  \n hi", add_special=False, parse_special=True).tolist()
    assert ids == [user, *tok.encode("hi", add_special=False).tolist()]
    assert user not in tok.encode("<|user|> hi", add_special=False).tolist()


def test_unicode16_letters_split_as_llama_cpp(shared):
    """Code points llama.cpp's tables (Unicode 15) leave unassigned but HF's regex engine
    (Unicode 16) calls letters: split as llama.cpp does, not as plain HF would."""
    path = shared("refs", "tokens", "vocab", "ggml-vocab-gpt-2.gguf")
    md, tok = _metadata(path), _tokenizer(path)
    ref = RefBpe(md["tokenizer.ggml.tokens"], md["tokenizer.ggml.merges"])
    for text in ["\U000105c0's", "a\U00016130's x", "\u1c89's \U00013460 12 ok  \n\n end"]:
        assert tok.encode(text).tolist() == ref.encode(text), text
    assert tok._bpe.hf.encode("\U000105c0's").ids != ref.encode("\U000105c0's")
