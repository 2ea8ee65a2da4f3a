"""The CLI used as a hostile user would: every bad command is refused before any work with one line
on stderr, and no input is ever overwritten (an output that is the source, through a symlink or
a hard link, the imatrix, the text)."""

from __future__ import annotations

import hashlib
import os

import pytest

from iqk_studio.cli import main
from iqk_studio.gguf.skeleton import build_skeleton
from iqk_studio.jobs import memory

TENSORS = [("token_embd.weight", (256, 64), "f16"), ("blk.0.attn_v.weight", (256, 256), "f16"),
           ("blk.0.ffn_down.weight", (256, 256), "f16"), ("output.weight", (256, 64), "f16")]
META = {"general.architecture": "llama", "llama.block_count": 1,
        "llama.attention.head_count": 8, "llama.embedding_length": 256}


@pytest.fixture
def model(tmp_path):
    return build_skeleton(tmp_path / "m.gguf", TENSORS, META)


@pytest.fixture
def tiny(shared):
    return str(shared("refs", "ppl", "tiny", "tiny-qwen2.gguf")), str(shared("data", "wiki.test.raw"))


def digest(p) -> str:
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def refused(capsys, argv, match: str) -> str:
    """Exit status 1 and exactly one stderr line `iqk-studio-cli: error: ...match...`."""
    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iqk-studio-cli: error: "), err
    assert match in err[0], err[0]
    return err[0]


def test_quantize_never_overwrites_its_source(model, tmp_path, capsys):
    before = digest(model)
    link = tmp_path / "link.gguf"
    link.symlink_to(model)
    hard = tmp_path / "hard.gguf"
    os.link(model, hard)
    for out in (model, tmp_path / "." / "m.gguf", link, hard):
        refused(capsys, ["quantize", model, out, "Q8_0"], "is the input model")
    refused(capsys, ["quantize", link, model, "Q8_0"], "is the input model")
    assert digest(model) == before and link.is_symlink()


def test_quantize_never_overwrites_the_imatrix(model, tmp_path, capsys, shared):
    im = tmp_path / "im.dat"
    im.write_bytes(shared("refs", "quant", "imatrix.dat").read_bytes())
    before = digest(im)
    refused(capsys, ["quantize", model, im, "Q4_K_M", "--imatrix", im], "is the imatrix file")
    assert digest(im) == before


def test_imatrix_and_kld_outputs_never_overwrite_inputs(tiny, tmp_path, capsys):
    m, text = tiny
    copy = tmp_path / "t.txt"
    copy.write_bytes(open(text, "rb").read()[:4096])
    refused(capsys, ["imatrix", m, "-f", copy, "-o", m], "is the input model")
    refused(capsys, ["imatrix", m, "-f", copy, "-o", copy], "is the text file")
    refused(capsys, ["kld", m, "-f", copy, "--save-base", copy], "is the text file")
    refused(capsys, ["kld", m, m, "-f", copy, "--save-base", m], "is the input model")


@pytest.mark.parametrize("argv,match", [
    (["quantize", "{m}", "{o}", "Q8_0", "--threads", "0"], "--threads 0: the thread count"),
    (["quantize", "{m}", "{o}", "Q8_0", "--threads", "-3"], "--threads -3"),
    (["quantize", "{m}", "{d}", "Q8_0"], "is a directory"),
    (["quantize", "{m}", "{d}/no/such/o.gguf", "Q8_0"], "does not exist"),
    (["plan", "{m}", "Q4_K_M", "--placement", "(exps=CPU"], "invalid regex"),
    (["plan", "{m}", "Q4_K_M", "--placement", "exps=banana"], "unknown device 'banana'"),
    (["plan", "{m}", "Q4_K_M", "--placement", "exps=cuda0"], "did you mean CUDA0?"),
    (["quantize", "{m}", "{o}", "Q4_K_M", "--placement", "exps=GPU"], "unknown device 'GPU'"),
    (["plan", "{m}", "--recipe", "{empty}"], "is empty (no @base line and no rules)"),
    (["plan", "{m}", "--recipe", "{nobase}"], "has no @base line"),
    (["quantize", "{m}", "{o}", "--recipe", "{empty}"], "is empty"),
    (["plan", "{m}", "Q4_K_M", "--imatrix", "{d}/none.dat"], "no such file"),
    (["plan", "{m}", "Q4_K_M", "--imatrix", "{trunc}"], "truncated"),
    (["plan", "{m}", "Q4_K_M", "--imatrix", "{d}"], "is a directory"),
    (["perplexity", "{m}", "-f", "{t}", "-t", "0"], "-t 0"),
    (["perplexity", "{m}", "-f", "{t}", "-c", "0"], "-c 0: the context size must be at least 4"),
    (["imatrix", "{m}", "-f", "{t}", "-c", "-5", "-o", "{o}"], "-c -5"),
    (["quantize", "{m}", "{o}", "Q8_0", "--threads", "100000"], "more than"),
    (["perplexity", "{m}", "-f", "/dev/zero"], "-f /dev/zero: not a regular file"),
    (["imatrix", "{m}", "-f", "{d}", "-o", "{o}"], "is a directory, not a text file"),
    (["kld", "/dev/zero", "{m}", "-f", "{t}"], "BASE /dev/zero: not a regular file"),
    (["recipe", "import", "/dev/zero"], "not a regular file"),
    (["recipe", "import", "{t}", "-o", "{t}"], "is the source text"),
    (["recipe", "import", "{trunc}"], "not UTF-8 text"),
    (["plan", "{m}", "--recipe", "{trunc}"], "not UTF-8 text"),
])
def test_nonsense_is_refused(model, tmp_path, capsys, shared, argv, match):
    empty = tmp_path / "empty.recipe"
    empty.write_text("# nothing but a comment\n\n")
    nobase = tmp_path / "nobase.recipe"
    nobase.write_text("ffn_down=q4_0\n")
    trunc = tmp_path / "trunc.dat"
    trunc.write_bytes(shared("refs", "quant", "imatrix.dat").read_bytes()[:100])
    text = tmp_path / "t.txt"
    text.write_text("hello world\n")
    names = {"m": model, "o": tmp_path / "o.gguf", "d": tmp_path, "empty": empty,
             "nobase": nobase, "trunc": trunc, "t": text}
    refused(capsys, [a.format(**names) for a in argv], match)
    assert not (tmp_path / "o.gguf").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["m.gguf", "empty.recipe", "nobase.recipe", "trunc.dat", "t.txt"])


def test_recipe_with_base_on_the_command_line_needs_no_at_base(model, tmp_path, capsys):
    nobase = tmp_path / "nobase.recipe"
    nobase.write_text("ffn_down=q4_0\n")
    assert main(["plan", str(model), "Q4_K_M", "--recipe", str(nobase)]) == 0
    assert "q4_0" in capsys.readouterr().out


def test_context_that_cannot_fit_is_refused_up_front(tiny, capsys, monkeypatch, tmp_path):
    """-c 40000 on a 4-head model needs ~40 GiB of attention scores: refused before tokenizing,
    with the figure and the largest context that fits; that context passes the same check."""
    m, _ = tiny
    text = tmp_path / "short.txt"  # were the check to miss, the run stops at "too short", safely
    text.write_text("a few words\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(memory, "available_bytes", lambda: 8 << 30)
    best = {}
    for cmd in (["perplexity", m, "-f", text], ["imatrix", m, "-f", text, "-o", "x.dat"],
                ["kld", m, m, "-f", text]):
        line = refused(capsys, [*cmd, "-c", "40000"], "a context of 40000 needs about")
        assert "8.0 GiB is available" in line
        best[cmd[0]] = int(line.rsplit("-c ", 1)[1])
        assert 4096 < best[cmd[0]] < 40000 and best[cmd[0]] % memory.CTX_STEP == 0
    assert best["kld"] < best["perplexity"]  # two models and the base's log-probs
    from iqk_studio.engine.model import config_from_metadata
    from iqk_studio.gguf.reader import open_model

    with open_model(m) as mm:
        cfg = config_from_metadata(mm.metadata, mm.tensors, mm.tensors["token_embd.weight"].shape)
        w = memory.weight_bytes(mm)
    assert memory.check_fits(cfg, best["perplexity"], w, available=8 << 30) is None
    assert memory.check_fits(cfg, best["perplexity"] + 64, w, available=8 << 30) is not None
    monkeypatch.setenv("IQK_MEMORY_CHECK", "0")  # the escape hatch skips the estimate
    from iqk_studio.commands._checks import check_memory
    check_memory([m], 40000)


def test_memory_need_grows_and_largest_ctx_fits(tiny):
    from iqk_studio.engine.model import config_from_metadata
    from iqk_studio.gguf.reader import open_model

    with open_model(tiny[0]) as mm:
        cfg = config_from_metadata(mm.metadata, mm.tensors, mm.tensors["token_embd.weight"].shape)
        w = memory.weight_bytes(mm)
    needs = [memory.need(cfg, t, w).total for t in (64, 512, 4096, 40000)]
    assert needs == sorted(needs) and needs[-1] > 36 * 2**30  # ~24 GiB of scores alone
    for budget in (1 << 30, 3 << 30, 24 << 30):
        best = memory.largest_ctx(cfg, budget, w)
        assert memory.need(cfg, best, w).total <= budget < memory.need(cfg, best + 64, w).total
    assert memory.largest_ctx(cfg, 1 << 20, w) == 0
    assert "the weights alone" in memory.check_fits(cfg, 512, w, available=1 << 20)


def test_sigterm_unwinds_like_ctrl_c_and_handlers_are_restored(model, capsys, monkeypatch):
    """In-process: a SIGTERM while a command runs ends main() with 143 and one line; the
    process's own handlers are back afterwards."""
    import signal
    import time

    from iqk_studio.commands import plan as plan_cmd

    def slow_run(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
        raise AssertionError("not interrupted")

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(plan_cmd, "run", slow_run)
    assert main(["plan", str(model), "Q8_0"]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err == "terminated\n"
    assert {s: signal.getsignal(s) for s in before} == before


def test_an_interrupt_swallowed_by_a_c_callback_stops_at_the_next_event(model, capsys,
                                                                        monkeypatch):
    """Ctrl-C while numba loads a kernel lands in llvmlite's ctypes callback, which cannot
    propagate it ("Exception ignored on calling ctypes callback function"): the command still
    stops, at the next event, with no such message."""
    import ctypes
    import signal
    import time

    from iqk_studio.cli import interruptible
    from iqk_studio.commands import plan as plan_cmd

    @ctypes.CFUNCTYPE(None)
    def callback():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(2)  # the handler raises here, inside the callback

    steps = []

    def job():
        for i in range(3):
            if i == 1:
                callback()
            steps.append(i)
            yield i

    def run(args):
        for _ in interruptible(job()):
            pass
        raise AssertionError("not interrupted")

    monkeypatch.setattr(plan_cmd, "run", run)
    assert main(["plan", str(model), "Q8_0"]) == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert steps == [0, 1]
