"""docs/types/: a page per quant-type family (the kernel folders of quant/kernels/) with each type's
block, bytes and bpw from the type table (gguf/types.py), and a PNG of every non-uniform value grid
of quant/grids.py that the family's types use. tools/gen_docs.py writes them; the PNGs are drawn
with numpy (no fonts: the same pixels on every machine), their values are printed below them."""

from __future__ import annotations

import struct
import zlib

import numpy as np

# family (the folder under quant/kernels/) -> (page title, what the family is)
FAMILIES: dict[str, tuple[str, str]] = {
    "floats": ("Floats", "Not quantized: one value per element. llama-quantize copies them or "
               "converts between them; 1-D tensors (norms, biases) always stay f32."),
    "legacy": ("Legacy and 32-weight-block types", "Blocks of 32 weights with one fp16 scale "
               "(and a minimum for q4_1 / q5_1): q4_0 ... q8_0 and ik_llama.cpp's q6_0; the "
               "non-linear IQ4_NL grid in 32-blocks (iq4_nl) and in 256-superblocks with 6-bit "
               "block scales (iq4_xs); mxfp4 (E2M1 values, one shared power-of-two scale per "
               "block); and types we only read (q1_0_g128, q8_KV, the BitNet iq1_bn / iq2_bn)."),
    "kquants": ("k-quants", "256-weight superblocks split into 16- or 32-weight blocks, whose "
                "scales (and minimums) are themselves quantized against fp16 superblock scales."),
    "iqgrid": ("IQ grid types", "Groups of 8 (4 for iq3) weights stored as an index into a "
               "lattice codebook (E8-derived for the 2-bit types), with sign bits and block "
               "scales; the quantizer searches the codebook (ggml-quants.c)."),
    "iqk": ("IQK types", "ik_llama.cpp's non-linear types (iqk_quantize.cpp): 16- or 32-weight "
            "blocks whose values come from a small non-uniform grid; most add a per-block shift "
            "bit that selects a second, shifted grid. The types with row meta (the _ks / _kss "
            "variants and iq2_kl) keep one row scale there instead of fp16 superblock scales."),
    "trellis": ("Trellis types", "ik_llama.cpp's trellis (`_kt`) types: each group of weights "
                "is a path in a trellis whose values a small integer hash generates, so there is "
                "no stored grid; one float row scale is kept in the row meta."),
    "repacked": ("Repacked (interleaved) types", "A base type's rows interleaved in groups of 4, "
                 "8 or 16 for faster CPU matrix products: the same bytes per block as the base "
                 "(a few have a layout of their own). llama-quantize writes the base type (or the "
                 "fallback shown) when a tensor's row count is not a multiple of the interleave."),
}
SAMPLE_ROW = 4096  # the row length for "bpw with row meta"


# ------------------------------------------------------------------------------ PNG, by hand
def png(img: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of an (h, w, 3) uint8 array (filter 0 on every row)."""
    h, w, _ = img.shape
    raw = b"".join(b"\0" + img[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(
            ">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def pixels(data: bytes) -> np.ndarray:
    """The (h, w, 3) pixels of a PNG written by png() (filter 0, RGB only)."""
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if tag == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    return rows[:, 1:].reshape(h, w, 3)


def same_pixels(a: bytes, b: bytes) -> bool:
    try:
        pa, pb = pixels(a), pixels(b)
    except (ValueError, zlib.error, struct.error):
        return False
    return pa.shape == pb.shape and bool(np.array_equal(pa, pb))


BG, AXIS, ZERO = (255, 255, 255), (150, 150, 150), (210, 210, 210)
ROW_COLOURS = ((31, 90, 170), (230, 130, 20))  # base half, shifted half
W, PAD, ROW_H = 720, 24, 44


def _rect(img, x0, y0, x1, y1, colour) -> None:
    img[max(y0, 0):y1, max(x0, 0):x1] = colour


def line_picture(rows: list[np.ndarray]) -> bytes:
    """One number line per row (the grid's halves), a tick per value, all on one scale."""
    vmax = max(float(np.abs(r).max()) for r in rows) or 1.0
    img = np.full((PAD + ROW_H * len(rows), W, 3), BG, np.uint8)

    def x(v):
        return int(round(PAD + (float(v) / vmax + 1) / 2 * (W - 2 * PAD)))

    for i, r in enumerate(rows):
        y = PAD // 2 + ROW_H * i + ROW_H // 2
        _rect(img, PAD, y, W - PAD, y + 1, AXIS)
        _rect(img, x(0), y - ROW_H // 2 + 4, x(0) + 1, y + ROW_H // 2 - 4, ZERO)
        for v in r:
            _rect(img, x(v) - 1, y - 13, x(v) + 2, y + 14, ROW_COLOURS[i % 2])
    return png(img)


def pair_picture(pairs: np.ndarray) -> bytes:
    """A 2-D grid: one square dot per (first, second) pair, on a square canvas."""
    size = 320
    vmax = float(np.abs(pairs).max()) or 1.0
    img = np.full((size, size, 3), BG, np.uint8)

    def c(v):
        return int(round(PAD + (float(v) / vmax + 1) / 2 * (size - 2 * PAD)))

    _rect(img, PAD, c(0), size - PAD, c(0) + 1, ZERO)
    _rect(img, c(0), PAD, c(0) + 1, size - PAD, ZERO)
    for a, b in pairs:
        _rect(img, c(a) - 3, size - c(b) - 3, c(a) + 4, size - c(b) + 4, ROW_COLOURS[0])
    return png(img)


# ------------------------------------------------------------------------------ pages
def _family_of() -> dict[str, str]:
    from iqk_studio.quant.registry import KERNELS

    return {t: m.split(".")[0] for t, m in KERNELS.items()}


def _grids_for(types: set[str]) -> list:
    """The non-uniform grids of quant/grids.py that these types use (linear ones left out)."""
    from iqk_studio.quant.grids import ALL_GRIDS

    return [g for g in ALL_GRIDS if set(g.types) & types and "linear" not in g.note]


def _values_text(g) -> str:
    v = g.values
    if v.ndim == 2:
        return ", ".join(f"({int(a)}, {int(b)})" for a, b in v)
    fmt = (lambda x: str(int(x))) if g.integer else (lambda x: f"{float(x):.6g}")
    if g.halves == 2:
        return (f"base: {', '.join(fmt(x) for x in g.base)}\n\n"
                f"shifted: {', '.join(fmt(x) for x in g.shifted)}")
    return ", ".join(fmt(x) for x in v)


def _num(x: float) -> str:
    return f"{x:.4f}".rstrip("0").rstrip(".")


def _type_rows(types) -> list[str]:
    from iqk_studio.gguf.types import FTYPES
    from iqk_studio.quant.registry import quantizes

    ftypes: dict[str, list[str]] = {}
    for f in FTYPES:
        ftypes.setdefault(f.default_type, []).append(f.name)
    repacked = any(t.interleave > 1 for t in types)
    head = "| type | id | block | bytes / block | row meta | bpw | bpw, rows of 4096 | kernels |"
    head += " base, rows, fallback |" if repacked else " llama-quantize types |"
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for t in types:
        bpw_row = t.row_bytes(SAMPLE_ROW) * 8 / SAMPLE_ROW if SAMPLE_ROW % t.block == 0 else 0
        kern = "quantize + dequantize" if quantizes(t.name) else "dequantize only"
        if repacked:
            fb = t.fallback or t.base
            last = f"{t.base}, {t.interleave}, {fb if fb != t.name else 'none'}"
        else:
            last = ", ".join(ftypes.get(t.name, [])) or ""
        out.append(f"| `{t.name}` | {t.id} | {t.block} | {t.type_size} | {t.row_meta or ''} | "
                   f"{_num(t.bpw)} | {_num(bpw_row)} | {kern} | {last} |")
    return out


def pages() -> dict[str, bytes]:
    """File name under docs/types/ -> contents."""
    from iqk_studio.gguf.types import QUANT_TYPES

    fam = _family_of()
    files: dict[str, bytes] = {}
    index = ["# Quant types by family", "", GENERATED, "",
             "Bits per weight (bpw) are `bytes per block x 8 / block`; `row meta` bytes (a row "
             "scale) come once per row on top, so the bpw of a whole tensor depends on its row "
             "length (shown for rows of 4096). llama-quantize types are the `llama_ftype` names "
             "whose default type it is.", "",
             "| family | types |", "|---|---|"]
    for key, (title, _) in FAMILIES.items():
        names = [t.name for t in QUANT_TYPES if fam.get(t.name) == key]
        index.append(f"| [{title}]({key}.md) | {', '.join(f'`{n}`' for n in names)} |")
    rest = [t for t in QUANT_TYPES if t.name not in fam]
    index += ["", "Types of the table with no kernel here (activation formats of the matrix "
              "products, integers, f64, i2_s): " + ", ".join(f"`{t.name}`" for t in rest) + ".",
              ""]
    files["README.md"] = "\n".join(index).encode()
    for key, (title, about) in FAMILIES.items():
        types = [t for t in QUANT_TYPES if fam.get(t.name) == key]
        lines = [f"# {title}", "", GENERATED, "", about, "", *_type_rows(types), ""]
        for g in _grids_for({t.name for t in types}):
            pic = f"{key}-{g.name}.png"
            if g.values.ndim == 2:
                files[pic] = pair_picture(g.values)
                what = "each dot one (first, second) pair"
            else:
                rows = [g.base, g.shifted] if g.halves == 2 else [g.values]
                files[pic] = line_picture(rows)
                what = ("base (blue) and shifted (orange) halves" if g.halves == 2
                        else "one tick per value")
            lines += [f"## `{g.name}`", "",
                      f"Used by {', '.join(f'`{n}`' for n in g.types)}; {g.bits}-bit index"
                      + (f"; {g.note}" if g.note else "") + f". Source: {g.source}.", "",
                      f"![{g.name}: {what}]({pic})", "", _values_text(g), ""]
        files[f"{key}.md"] = "\n".join(lines).encode()
    return files


GENERATED = ("<!-- generated by tools/gen_docs.py from gguf/types.py, quant/registry.py and "
             "quant/grids.py; do not edit by hand -->")
