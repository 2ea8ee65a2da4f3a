"""The recipe file: `regex=type` lines with `#` comments (as people keep them in bash scripts)
plus `@key value` header lines for the base type, options, imatrix, placement and a note.

    # Qwen3-30B-A3B, routed experts at 2 bits
    @base IQ4_KS
    @imatrix imatrix-qwen3-30b.dat
    @output-tensor-type q6_K
    @placement exps=CPU
    @note first three ffn_down_exps kept at 4 bits
    blk\\.[0-2]\\.ffn_down_exps=iq4_ks
    ffn_(up|gate|down)_exps=iq2_ks
"""

from __future__ import annotations

import shlex
from pathlib import Path

from iqk_studio.recipe.records import CLASS_OPTIONS, FLAG_OPTIONS, Placement, Recipe, Rule

_VALUE_KEYS = {opt[2:]: field for field, opt in CLASS_OPTIONS.items()}
_FLAG_KEYS = {opt[2:]: field for field, opt in FLAG_OPTIONS.items()}


class RecipeSyntaxError(ValueError):
    def __init__(self, line: int, column: int, message: str, source: str = "recipe"):
        super().__init__(f"{source}:{line}:{column}: {message}")
        self.line, self.column = line, column


def split_item(text: str, line: int = 1, col0: int = 0, what: str = "rule",
               source: str = "recipe") -> tuple[str, str]:
    """`pattern=value` at the first '=' (as llama-quantize does)."""
    pos = text.find("=")
    if pos < 0:
        raise RecipeSyntaxError(line, col0 + 1, f"{what} {text!r} has no '=' (expected regex=type)",
                                source)
    return text[:pos], text[pos + 1:]


def _rule_line(raw: str, n: int, source: str) -> Rule:
    """A rule line; a `# comment` may follow the type after white space."""
    pat, rest = split_item(raw.strip(), n, len(raw) - len(raw.lstrip()), "rule", source)
    parts = rest.split(None, 1)
    typ = parts[0] if parts else ""
    if len(parts) > 1 and not parts[1].startswith("#"):
        raise RecipeSyntaxError(n, raw.index(parts[1]) + 1,
                                f"unexpected text after the type: {parts[1]!r}", source)
    return Rule(pat.strip(), typ)


def loads(text: str, source: str = "recipe") -> Recipe:
    fields: dict = {"rules": [], "placement": [], "extra_args": [], "note": []}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("@"):
            fields["rules"].append(_rule_line(raw, n, source))
            continue
        key, _, value = line[1:].partition(" ")
        value = value.strip()
        if key in _FLAG_KEYS:
            fields[_FLAG_KEYS[key]] = value.lower() not in ("0", "false", "no", "off")
        elif key == "note":
            fields["note"].append(value)
        elif key == "extra":
            fields["extra_args"].extend(shlex.split(value))
        elif not value:
            raise RecipeSyntaxError(n, len(raw) + 1, f"@{key} needs a value", source)
        elif key == "base":
            fields["base"] = value
        elif key == "imatrix":
            fields["imatrix"] = value
        elif key == "placement":
            pat, dev = split_item(value, n, raw.index(value), "placement", source)
            fields["placement"].append(Placement(pat.strip(), dev.strip()))
        elif key in _VALUE_KEYS:
            fields[_VALUE_KEYS[key]] = value
        else:
            raise RecipeSyntaxError(n, 1, f"unknown header @{key}", source)
    fields["note"] = "\n".join(fields["note"])
    for k in ("rules", "placement", "extra_args"):
        fields[k] = tuple(fields[k])
    return Recipe(**fields)


def dumps(recipe: Recipe) -> str:
    out = ["# iqk-studio recipe: regex=type rules for llama-quantize --custom-q (first match wins)",
           f"@base {recipe.base}"]
    out += [f"@note {line}" for line in recipe.note.split("\n")] if recipe.note else []
    if recipe.imatrix:
        out.append(f"@imatrix {recipe.imatrix}")
    out += [f"@{opt[2:]}" for f, opt in FLAG_OPTIONS.items() if getattr(recipe, f)]
    out += [f"@{CLASS_OPTIONS[f][2:]} {v}" for f, v in recipe.options().items()]
    out += [f"@placement {p}" for p in recipe.placement]
    if recipe.extra_args:
        out.append("@extra " + shlex.join(recipe.extra_args))
    out += [str(r) for r in recipe.rules]
    return "\n".join(out) + "\n"


def load(path, need_base: bool = False) -> Recipe:
    """A recipe file; need_base (no base type given elsewhere): a file without an @base line is
    an error rather than silently Q8_0, and so is a file with nothing in it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecipeSyntaxError(1, 1, f"not UTF-8 text (byte {e.start})", str(p)) from None
    recipe = loads(text, str(p))
    if need_base and not any(line.strip().startswith("@base") for line in text.splitlines()):
        empty = recipe == Recipe(note=recipe.note)
        what = "is empty (no @base line and no rules)" if empty else "has no @base line"
        raise RecipeSyntaxError(1, 1, f"the recipe {what}: add '@base TYPE' or give the base "
                                "type on the command line", str(p))
    return recipe


def save(recipe: Recipe, path) -> Path:
    """Write atomically (temp file + rename), so a failure never leaves half a recipe."""
    from iqk_studio.gguf.writer import temp_path

    p = Path(path)
    tmp = temp_path(p)
    try:
        tmp.write_text(dumps(recipe), encoding="utf-8")
        tmp.replace(p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p
