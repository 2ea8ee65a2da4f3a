"""Recipe lint: what llama-quantize would reject, silently ignore, or do differently than asked."""

from __future__ import annotations

import re

from iqk_studio.gguf.types import BY_NAME, by_name, parse_ftype
from iqk_studio.recipe.ecma import translate
from iqk_studio.recipe.mixes import IQ2_FAMILY
from iqk_studio.recipe.records import CLASS_OPTIONS, Lint, Plan, Recipe

# quantize.cpp:634-646: these ftypes refuse to start without an imatrix
REFUSE_WITHOUT_IMATRIX = {"IQ2_XS", "IQ2_XXS", "IQ2_S", "IQ2_XXS_R4", "Q2_K_S", "IQ2_XS_R4",
                          "IQ1_S", "IQ1_S_R4", "IQ1_M_R4", "IQ1_M"}
NOT_MODELLED = {
    "--extra-output-tensor": "adds output_extra.weight to the file; not in this plan's sizes "
                             "(a --dry-run does not count it either)",
    "--repack": "repacks instead of quantizing; the plan does not model it",
    "--include-weights": "limits the imatrix entries; the plan assumes the imatrix covers all",
    "--exclude-weights": "limits the imatrix entries; the plan assumes the imatrix covers all",
}
ROLE_OPTIONS = ("attn_q_type", "attn_k_type", "attn_v_type", "attn_qkv_type", "attn_output_type",
                "ffn_gate_type", "ffn_up_type", "ffn_down_type")


def _where(i: int, r, col: int | None = None) -> str:
    return f"rule {i + 1} '{r}'" + ("" if col is None else f", column {col + 1}")


def _few(names, n: int = 4) -> str:
    names = list(names)
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def lint_rules(recipe: Recipe) -> list[Lint]:
    """Checks of the rule text alone (no model needed)."""
    out = []
    for i, r in enumerate(recipe.rules):
        if "," in r.pattern:
            out.append(Lint("comma", "error", "a regex cannot contain ',': --custom-q splits its "
                            "argument at every comma (so no {m,n} repeats; use alternation)",
                            _where(i, r, r.pattern.index(",")), i))
        if r.pattern != r.pattern.strip():
            out.append(Lint("whitespace", "warning", "the pattern has leading or trailing spaces, "
                            "which are part of the regex", _where(i, r), i))
        if not r.pattern:
            out.append(Lint("empty-pattern", "warning", "an empty pattern matches every tensor",
                            _where(i, r), i))
        if r.type_name not in BY_NAME:
            try:
                by_name(r.type_name)
            except KeyError as e:
                msg = e.args[0]
            out.append(Lint("bad-type", "error", f"llama-quantize exits: {msg}",
                            _where(i, r, len(r.pattern) + 1), i))
        for note in translate(r.pattern).notes:
            code = "bad-regex" if note.severity == "error" else "regex-differs"
            msg = note.message + (" (llama-quantize aborts at the first tensor)"
                                  if note.severity == "error" else "")
            out.append(Lint(code, note.severity, msg, _where(i, r, note.column), i))
    return out


# llama.cpp's -ot buffer type names (ggml_backend_buft_name of each backend's default buffer type)
DEVICE_NAME = re.compile(r"CPU|(CUDA|ROCm|MUSA|Vulkan|SYCL|CANN)\d+|Metal|RPC\d*\[[^\]]+\]")
DEVICE_FORMS = "CPU, CUDA0, ROCm0, Vulkan0, SYCL0, CANN0, Metal, RPC0[host:port]"


_SPELLING = {n.upper(): n for n in ("CPU", "Metal", "CUDA", "ROCm", "MUSA", "Vulkan", "SYCL", "CANN")}


def _device_spelling(dev: str) -> str | None:
    """The buffer type a wrongly cased name meant (cpu -> CPU, cuda0 -> CUDA0), else None."""
    m = re.fullmatch(r"([A-Za-z]+)(\d*)", dev)
    if m is None or m.group(1).upper() not in _SPELLING:
        return None
    fix = _SPELLING[m.group(1).upper()] + m.group(2)
    return fix if DEVICE_NAME.fullmatch(fix) else None


def lint_placement(recipe: Recipe) -> list[Lint]:
    """-ot items that llama-server would refuse: a bad regex, a comma, an unknown buffer type."""
    out = []
    for i, p in enumerate(recipe.placement):
        where = f"placement {i + 1} '{p}'"
        if "," in p.pattern:
            out.append(Lint("placement-comma", "error", "a placement regex cannot contain ',': "
                            "-ot splits its argument at every comma", where))
        for note in translate(p.pattern).notes:
            if note.severity == "error":
                out.append(Lint("placement-regex", "error", note.message, where))
        if not p.pattern:
            out.append(Lint("placement-empty", "warning", "an empty pattern matches every "
                            "tensor", where))
        if not DEVICE_NAME.fullmatch(p.device):
            fix = _device_spelling(p.device)
            hint = (f"; did you mean {fix}? buffer type names are case-sensitive" if fix else
                    f" (llama.cpp's buffer types look like {DEVICE_FORMS})")
            out.append(Lint("placement-device", "error", f"unknown device {p.device!r}{hint}",
                            where))
    return out


def lint_options(recipe: Recipe) -> list[Lint]:
    out = []
    ft = parse_ftype(recipe.base)
    base_quant = BY_NAME[ft.default_type].is_quantized
    for field, flag in CLASS_OPTIONS.items():
        raw = getattr(recipe, field)
        if raw is None:
            continue
        if raw not in BY_NAME:
            low = {n.lower(): n for n in BY_NAME}
            hint = (f"; did you mean {low[raw.lower()]!r}? type names are case-sensitive"
                    if raw.lower() in low else "")
            out.append(Lint("option-ignored", "warning", f"{flag} {raw}: unknown type name, "
                            f"silently ignored by llama-quantize (the option acts as unset){hint}",
                            flag))
            continue
        if field not in ROLE_OPTIONS:
            continue
        if recipe.pure or not base_quant:
            why = "--pure" if recipe.pure else f"the base {ft.name} is not quantized"
            out.append(Lint("option-ignored", "warning", f"{flag} is ignored: {why}", flag))
        elif field == "attn_qkv_type":
            out.append(Lint("option-ignored", "warning", "--attn-qkv-type never applies: "
                            "attn_qkv tensors are caught by the attn_q rule (--attn-q-type)", flag))
        elif ft.name in IQ2_FAMILY and field != "attn_output_type":
            out.append(Lint("option-ignored", "warning", f"{flag} is ignored for {ft.name}: that "
                            "mix has its own branch (only --attn-output-type is honoured)", flag))
        elif ft.name in ("IQ2_KT", "IQ1_S_R4", "IQ1_M_R4") and field != "ffn_down_type":
            out.append(Lint("option-ignored", "warning", f"{flag} is ignored for {ft.name}: that "
                            "mix has its own branch (only --ffn-down-type is honoured)", flag))
    if recipe.rules and (recipe.pure or not base_quant):
        why = "--pure" if recipe.pure else f"the base {ft.name} is not a quantized type"
        out.append(Lint("rules-ignored", "warning", f"all {len(recipe.rules)} custom rules are "
                        f"ignored by llama-quantize: {why}"))
    for a in recipe.extra_args:
        if a in NOT_MODELLED:
            out.append(Lint("not-modelled", "info", f"{a}: {NOT_MODELLED[a]}", a))
    if (ft.name in REFUSE_WITHOUT_IMATRIX and not recipe.has_imatrix
            and not recipe.ignore_imatrix_rules):
        out.append(Lint("needs-imatrix", "error", "llama-quantize refuses to start: 'Please do not "
                        f"use IQ1_S, IQ1_M, IQ2_S, IQ2_XXS, IQ2_XS or Q2_K_S quantization without "
                        f"an importance matrix' (base {ft.name}; give --imatrix or "
                        f"--ignore-imatrix-rules)"))
    return out


def _rule_usage(plan: Plan, recipe: Recipe, matches, candidates: frozenset[int]) -> list[Lint]:
    out = []
    taken: dict[int, int] = {}  # tensor index -> first rule that matched it
    for i, r in enumerate(recipe.rules):
        if r.type_name not in BY_NAME or translate(r.pattern).regex is None:
            continue
        hits = matches(r.pattern)
        cand = hits & candidates
        if not hits:
            out.append(Lint("rule-unused", "warning", "matches no tensor of this model",
                            _where(i, r), i))
        elif not cand:
            names = [plan.entries[j].name for j in sorted(hits)]
            out.append(Lint("rule-unused", "warning", "matches only tensors llama-quantize never "
                            f"quantizes ({_few(names)})", _where(i, r), i))
        elif all(j in taken for j in cand):
            earlier = sorted({taken[j] + 1 for j in cand})
            out.append(Lint("rule-shadowed", "warning", "shadowed: every tensor it matches is "
                            f"already taken by rule(s) {', '.join(map(str, earlier))} (first match "
                            "wins)", _where(i, r), i))
        for j in cand:
            taken.setdefault(j, i)
    return out


def _plan_checks(plan: Plan) -> list[Lint]:
    out = []
    fb: dict[tuple[str, str], list[str]] = {}
    nomat, requant = [], []
    gate_up: dict[int, dict[str, str]] = {}
    for e in plan.entries:
        if e.fallback_from:
            fb.setdefault((e.fallback_from, e.type), []).append(e.name)
        for w in e.warnings:
            if "without an imatrix" in w:
                nomat.append(e.name)
            elif "--allow-requantize" in w:
                requant.append(e.name)
        if e.cls in ("experts_gate", "experts_up") and e.layer is not None:
            gate_up.setdefault(e.layer, {})[e.cls] = e.type
    for (a, b), names in fb.items():
        out.append(Lint("fallback", "warning", f"{len(names)} tensor(s) asked for {a} were written "
                        f"as {b} by the block-size fallback: {_few(names)}", tensors=tuple(names)))
    if nomat:
        out.append(Lint("needs-imatrix", "error",
                        f"{len(nomat)} tensor(s) get a type that needs an imatrix and none is "
                        "set: llama-quantize stops at the first one ('Missing importance matrix "
                        "for tensor ... in a very low-bit quantization'); give --imatrix or "
                        f"--ignore-imatrix-rules: {_few(nomat)}", tensors=tuple(nomat)))
    if requant:
        out.append(Lint("requantize", "error", f"{len(requant)} source tensor(s) are already "
                        "quantized: llama-quantize refuses without --allow-requantize: "
                        f"{_few(requant)}", tensors=tuple(requant)))
    bad = [f"blk.{il}: gate {d['experts_gate']} / up {d['experts_up']}"
           for il, d in sorted(gate_up.items())
           if len(d) == 2 and d["experts_gate"] != d["experts_up"]]
    if bad:
        out.append(Lint("gate-up-mismatch", "warning", "ffn_gate_exps and ffn_up_exps of a layer "
                        f"have different types, which disables the fused -fmoe path: {_few(bad)}"))
    return out


def lint_plan(plan: Plan, recipe: Recipe, matches, candidates: frozenset[int]) -> tuple[Lint, ...]:
    return tuple(lint_rules(recipe) + lint_options(recipe) + lint_placement(recipe)
                 + _rule_usage(plan, recipe, matches, candidates) + _plan_checks(plan))
