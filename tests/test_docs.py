"""Generated docs are up to date with the code: docs/CLI.md (argparse) and docs/types/ (the type
table and the grids). A failure names the stale files and the command that regenerates them."""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import gen_docs  # noqa: E402
import types_doc  # noqa: E402


def test_generated_docs_are_current():
    bad = gen_docs.stale()
    assert not bad, f"stale generated docs {bad}: run `{gen_docs.REGENERATE}` and commit them"


def test_cli_doc_names_every_command_and_option():
    from iqk_studio import cli

    text = (ROOT / "docs" / "CLI.md").read_text()
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, sp in sub.choices.items():
        assert f"### `iqk-studio-cli {name}`" in text
        for a in sp._actions:
            for opt in a.option_strings:
                if opt not in ("-h", "--help"):
                    assert f"`{opt}" in text, f"{name} {opt}"


def test_type_pages_cover_the_kernel_index():
    from iqk_studio.quant.registry import KERNELS

    pages = types_doc.pages()
    for t, module in KERNELS.items():
        family = module.split(".")[0]
        assert f"| `{t}` |" in pages[f"{family}.md"].decode(), (t, family)


def test_png_round_trip_and_pixel_compare():
    img = np.zeros((3, 4, 3), np.uint8)
    img[1, 2] = (10, 20, 30)
    data = types_doc.png(img)
    assert np.array_equal(types_doc.pixels(data), img)
    other = img.copy()
    other[0, 0] = 1
    assert not types_doc.same_pixels(data, types_doc.png(other))
    assert not types_doc.same_pixels(data, b"not a png")
