"""Published (size, PPL) results of library recipes, read from their `@note published: ...` lines:
third-party points for the size-vs-quality chart.

    @note published: size 10.229 GiB; PPL 9.3908; base PPL 9.0656; importance imatrix (ikawrakow);
    @note ... model Qwen3-30B-A3B; text wiki.test.raw       (one line in the file)

`size` is required; the other keys are optional; a recipe may carry several such lines (the same
mix quantized with different importance data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from iqk_studio.recipe import library
from iqk_studio.recipe.records import Recipe

PREFIX = "published:"
_NUMBER = re.compile(r"\d+(\.\d+)?")
_KEYS = ("size", "PPL", "base PPL", "importance", "model", "text")


@dataclass(frozen=True)
class PublishedPoint:
    recipe: str  # library name, e.g. "IQK-3-KS"
    size_gib: float  # GiB = 2^30 bytes, as llama.cpp prints model sizes
    ppl: float | None  # None when only the size was published
    base_ppl: float | None  # the unquantized model's PPL in the same setting
    importance: str  # "imatrix (ikawrakow)", "no imatrix, w = 1", ... ("" when not stated)
    model: str
    text: str  # evaluation text, e.g. wiki.test.raw
    source: str  # where the numbers were published (the recipe's `source:` URL)

    @property
    def quality_loss(self) -> float | None:
        """PPL(Q)/PPL(base) - 1 (a fraction), the study's y axis."""
        if self.ppl is None or not self.base_ppl:
            return None
        return self.ppl / self.base_ppl - 1.0

    @property
    def label(self) -> str:
        return f"{self.recipe} ({self.importance})" if self.importance else self.recipe


def _number(key: str, value: str, line: str) -> float:
    if not _NUMBER.fullmatch(value):
        raise ValueError(f"published line {line!r}: {key} {value!r} is not a number")
    return float(value)


def parse_line(line: str, recipe: str = "", source: str = "") -> PublishedPoint:
    """One `published: key value; ...` note line."""
    body = line.strip()
    if not body.startswith(PREFIX):
        raise ValueError(f"not a published line: {line!r}")
    fields: dict[str, str] = {}
    for item in body[len(PREFIX):].split(";"):
        item = item.strip()
        key = next((k for k in sorted(_KEYS, key=len, reverse=True)
                    if item.startswith(k + " ")), None)
        if key is None or key in fields:
            raise ValueError(f"published line {line!r}: unknown or repeated item {item!r} "
                             f"(keys: {', '.join(_KEYS)})")
        fields[key] = item[len(key):].strip()
    size = fields.get("size", "")
    if not size.endswith(" GiB"):
        raise ValueError(f"published line {line!r}: give the size as 'size N GiB'")
    ppl = fields.get("PPL")
    base = fields.get("base PPL")
    return PublishedPoint(recipe, _number("size", size[:-4].strip(), line),
                          None if ppl is None else _number("PPL", ppl, line),
                          None if base is None else _number("base PPL", base, line),
                          fields.get("importance", ""), fields.get("model", ""),
                          fields.get("text", ""), source)


def points_of(recipe: Recipe, name: str = "") -> list[PublishedPoint]:
    """The published points a recipe's note carries (a `source: URL` note line is their source)."""
    lines = recipe.note.splitlines()
    src = next((m.group(1) for ln in lines for m in [re.search(r"source: (\S+)", ln)] if m), "")
    return [parse_line(ln, name, src) for ln in lines if ln.strip().startswith(PREFIX)]


def published_points(model: str | None = None) -> list[PublishedPoint]:
    """Every published point of the library recipes (optionally only for one model name,
    compared case-insensitively), in library order."""
    out = []
    for name in library.names():
        for p in points_of(library.load_named(name), name):
            if model is None or p.model.lower() == model.lower():
                out.append(p)
    return out
