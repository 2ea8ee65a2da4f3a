"""Recipes to and from llama-quantize command lines: ik_llama.cpp (`--custom-q`) and mainline
llama.cpp (`--tensor-type`), and pasted bash from model cards (`custom="..."` blocks)."""

from __future__ import annotations

import re
import shlex

from iqk_studio.gguf.types import BY_NAME, parse_ftype
from iqk_studio.recipe.records import CLASS_OPTIONS, FLAG_OPTIONS, Lint, Placement, Recipe, Rule
from iqk_studio.recipe.textfile import RecipeSyntaxError

_OPT_FIELD = {opt: field for field, opt in CLASS_OPTIONS.items()}
_FLAG_FIELD = {opt: field for field, opt in FLAG_OPTIONS.items()}
# ik llama-quantize options not represented by Recipe fields (kept verbatim in extra_args)
_PASS_VALUE = {"--repack-pattern", "--extra-output-tensor", "--override-kv", "--include-weights",
               "--exclude-weights"}
_PASS_FLAG = {"--symmetric-q40", "--slow-iq2ks", "--repack", "--hide-imatrix", "--keep-split",
              "--partial-requant"}
# ggml types mainline llama.cpp also has (the ik-only ones cannot be exported there)
MAINLINE_TYPES = {"f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_K", "q3_K",
                  "q4_K", "q5_K", "q6_K", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s",
                  "iq1_s", "iq1_m", "iq4_nl", "iq4_xs", "mxfp4"}
# per-class options mainline no longer has: the equivalent --tensor-type rule (ik's substrings)
_MAINLINE_ROLE = {"attn_v_type": r"attn_v\.weight", "attn_k_type": "attn_k",
                  "attn_q_type": "attn_q", "ffn_down_type": "ffn_down",
                  "attn_output_type": r"attn_output\.weight", "ffn_gate_type": "ffn_gate",
                  "ffn_up_type": "ffn_up"}


def split_custom_q(arg: str) -> list[Rule]:
    """parse_custom_quants: split at every ',', each item at its first '=' (no trimming)."""
    rules, col = [], 0
    for item in arg.split(","):
        pos = item.find("=")
        if pos < 0:
            raise RecipeSyntaxError(1, col + 1, f"--custom-q item {item!r} has no '=': "
                                    "llama-quantize prints its usage and exits", "--custom-q")
        rules.append(Rule(item[:pos], item[pos + 1:]))
        col += len(item) + 1
    return rules


def split_placement(arg: str) -> list[Placement]:
    """-ot / --override-tensor / --placement: `regex=DEVICE[,regex=DEVICE...]`, each item split
    at its first '=' (a bare regex goes to the CPU); no trimming."""
    out = []
    for item in arg.split(","):
        pat, _, dev = item.partition("=")
        out.append(Placement(pat, dev or "CPU"))
    return out


def mainline_type(name: str) -> str:
    """Mainline parses type names case-insensitively: map to the exact ik spelling."""
    low = {n.lower(): n for n in BY_NAME}
    return low.get(name.lower(), name)


def parse_argv(argv: list[str]) -> tuple[Recipe, list[Lint]]:
    """A llama-quantize argv (after the program name), ik_llama.cpp or mainline syntax."""
    f: dict = {"rules": [], "extra_args": []}
    lints: list[Lint] = []
    mainline = "--tensor-type" in argv  # mainline parses type names case-insensitively
    i = 0
    while i < len(argv) and argv[i].startswith("--"):
        a = argv[i]
        needs = a in _OPT_FIELD or a in _PASS_VALUE or a in (
            "--custom-q", "--imatrix", "--tensor-type", "--tensor-type-file", "--prune-layers")
        if needs and i + 1 >= len(argv):
            raise ValueError(f"{a} needs a value")
        v = argv[i + 1] if needs else None
        if a == "--custom-q":
            f["rules"] += split_custom_q(v)
        elif a == "--tensor-type":  # mainline: one regex=type, regex lower-cased
            pat, typ = v.split("=", 1) if "=" in v else (v, "")
            f["rules"].append(Rule(pat.lower(), mainline_type(typ)))
        elif a == "--imatrix":
            f["imatrix"] = v
        elif a in _OPT_FIELD:
            f[_OPT_FIELD[a]] = mainline_type(v) if mainline else v
        elif a in _FLAG_FIELD:
            f[_FLAG_FIELD[a]] = True
        elif a in _PASS_VALUE:
            f["extra_args"] += [a, v]
        elif a in _PASS_FLAG:
            f["extra_args"].append(a)
        elif a == "--dry-run":
            pass
        else:
            lints.append(Lint("import", "warning", f"option {a} not understood: dropped", a))
        i += 2 if needs else 1
    pos = argv[i:]
    if len(pos) < 2:
        raise ValueError("need MODEL_IN [MODEL_OUT] TYPE after the options")
    try:
        parse_ftype(pos[1])
        base, rest = pos[1], pos[2:]
    except KeyError:
        if len(pos) < 3:
            raise ValueError(f"missing the type after {pos[1]!r}") from None
        base, rest = pos[2], pos[3:]
        try:
            parse_ftype(base)
        except KeyError:
            raise ValueError(f"llama-quantize: invalid ftype {base!r}") from None
    if rest and not rest[0].lstrip("-").isdigit():
        lints.append(Lint("import", "error", f"llama-quantize reads {rest[0]!r} as the thread "
                          "count and stops (options must come before the file names)", rest[0]))
    f["base"] = base
    for k in ("rules", "extra_args"):
        f[k] = tuple(f[k])
    return Recipe(**f), lints


# --------------------------------------------------------------------------- bash import

_ASSIGN = re.compile(r'^\s*(?:export\s+)?([A-Za-z_]\w*)=("(?:[^"\\]|\\.)*"|\'[^\']*\')',
                     re.M | re.S)
_PIPE = re.compile(r'^\s*([A-Za-z_]\w*)=\$\(\s*echo\s+"\$\{?(\w+)\}?"\s*\|\s*grep\s+-v\s+'
                   r"'\^#'.*?\)", re.M | re.S)


_PROG = re.compile(r"(llama-)?quantize(\.exe)?")


def _dq(body: str) -> str:
    """Bash double-quote processing: \\ escapes only $ ` " \\ and newline."""
    return re.sub(r'\\([$`"\\\n])', lambda m: "" if m.group(1) == "\n" else m.group(1), body)


def comment_pipeline(value: str) -> str:
    """echo "$v" | grep -v '^#' | sed -Ez 's:\\n+:,:g;s:,$::;s:^,::' (the model-card idiom)."""
    kept = [ln for ln in (value + "\n").split("\n")[:-1] if not ln.startswith("#")]
    out = re.sub(r"\n+", ",", "".join(ln + "\n" for ln in kept))
    out = out[:-1] if out.endswith(",") else out
    return out[1:] if out.startswith(",") else out


def _variables(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for m in _ASSIGN.finditer(text):
        raw = m.group(2)
        env[m.group(1)] = _dq(raw[1:-1]) if raw[0] == '"' else raw[1:-1]
    for m in _PIPE.finditer(text):
        if m.group(2) in env:
            env[m.group(1)] = comment_pipeline(env[m.group(2)])
    return env


def _expand(tok: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), m.group(0)),
                  tok)


def _commands(text: str):
    """Logical command lines (backslash-newline joined, outside the assignment blocks)."""
    body = _PIPE.sub("", _ASSIGN.sub("", text))
    body = re.sub(r"\\\r?\n", " ", body)
    for line in body.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def import_text(text: str, base: str | None = None) -> tuple[Recipe, list[Lint]]:
    """A pasted llama-quantize command line, optionally with a `custom="..."` block before it."""
    env = _variables(text)
    recipe, lints, placement = None, [], []
    for line in _commands(text):
        argv = [_expand(t, env) for t in shlex.split(line, comments=True)]
        prog = next((k for k, t in enumerate(argv) if _PROG.fullmatch(t.rsplit("/", 1)[-1])),
                    None)
        for k, t in enumerate(argv[:-1]):
            if t in ("-ot", "--override-tensor"):
                placement.extend(split_placement(argv[k + 1]))
        if prog is not None and recipe is None:
            recipe, lints = parse_argv(argv[prog + 1:])
    if recipe is None:
        custom = next((v for k, v in env.items() if "=" in v), None)
        if custom is None or base is None:
            raise ValueError("no llama-quantize command found (give the base type to import "
                             "only a rules block)")
        recipe = Recipe(base, rules=tuple(split_custom_q(custom if "\n" not in custom
                                                         else comment_pipeline(custom))))
    elif base:
        recipe = recipe.with_(base=base)
    if placement:
        recipe = recipe.with_(placement=tuple(placement))
    return recipe, lints


# --------------------------------------------------------------------------- export

def _lines(argv: list[str], multiline: bool) -> str:
    q = [shlex.quote(a) for a in argv]
    if not multiline:
        return " ".join(q)
    out, k = [q[0]], 1
    while k < len(q):  # an option and its value on one line
        take = 2 if q[k].startswith("--") and k + 1 < len(q) and not q[k + 1].startswith("--") \
            and argv[k] not in _FLAG_FIELD and argv[k] not in _PASS_FLAG else 1
        out.append("    " + " ".join(q[k:k + take]))
        k += take
    return " \\\n".join(out)


def _common(recipe: Recipe, mainline: bool) -> list[str]:
    args = []
    if recipe.imatrix:
        args += ["--imatrix", recipe.imatrix]
    args += [opt for f, opt in FLAG_OPTIONS.items() if getattr(recipe, f)]
    for field, val in recipe.options().items():
        if mainline and field in _MAINLINE_ROLE:
            continue
        args += [CLASS_OPTIONS[field], val]
    return args


def export_ik(recipe: Recipe, model_in: str, model_out: str, *, program: str = "llama-quantize",
              one_option_per_rule: bool = False, nthreads: int | None = None,
              multiline: bool = True) -> str:
    """The complete ik_llama.cpp command line; raises ValueError for rules it cannot carry."""
    bad = [str(r) for r in recipe.rules if "," in r.pattern or "," in r.type_name]
    if bad:
        raise ValueError(f"--custom-q cannot carry a rule with a comma: {bad[0]!r}")
    args = [program] + _common(recipe, False) + list(recipe.extra_args)
    if recipe.rules:
        items = [str(r) for r in recipe.rules]
        for group in ([[x] for x in items] if one_option_per_rule else [items]):
            args += ["--custom-q", ",".join(group)]
    args += [model_in, model_out, recipe.base] + ([str(nthreads)] if nthreads else [])
    return _lines(args, multiline)


def export_mainline(recipe: Recipe, model_in: str, model_out: str, *,
                    program: str = "llama-quantize", multiline: bool = True):
    """Mainline llama.cpp command line and the lints on what does not carry over exactly."""
    lints = []
    rules = list(recipe.rules)
    for field, pat in _MAINLINE_ROLE.items():
        val = getattr(recipe, field)
        if val:
            rules.append(Rule(pat, val))
            lints.append(Lint("mainline", "warning",
                              f"{CLASS_OPTIONS[field]} has no mainline equivalent: written as "
                              f"--tensor-type {pat}={val} (after the rules)"))
    args = [program] + _common(recipe, True)
    for r in rules:
        if r.type_name not in MAINLINE_TYPES:
            lints.append(Lint("mainline", "error", f"{r.type_name} does not exist in mainline "
                              "llama.cpp", str(r)))
        if r.pattern != r.pattern.lower():
            lints.append(Lint("mainline", "warning", "mainline lower-cases the pattern (so "
                              "\\D \\W \\S change meaning)", str(r)))
        args += ["--tensor-type", str(r)]
    if BY_NAME[parse_ftype(recipe.base).default_type].name not in MAINLINE_TYPES:
        lints.append(Lint("mainline", "error", f"base {recipe.base} does not exist in mainline"))
    lints.append(Lint("mainline", "info", "mainline's default mixes and block-size fallbacks "
                      "differ from ik_llama.cpp's: tensors no rule matches may get other types"))
    return _lines(args + [model_in, model_out, recipe.base], multiline), lints


def placement_args(recipe: Recipe) -> str:
    """The -ot option for llama-server / llama-cli that realises the recipe's placement."""
    if not recipe.placement:
        return ""
    return "-ot " + shlex.quote(",".join(str(p) for p in recipe.placement))
