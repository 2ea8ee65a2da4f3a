"""plan(model, recipe) -> Plan: the type and exact size llama-quantize (ik_llama.cpp 8337e4cd3)
gives every tensor, with the reason, placement and lint. Reads names, shapes, types, metadata only.
"""

from __future__ import annotations

from collections import OrderedDict

from iqk_studio.gguf.imatrix import candidate_names
from iqk_studio.gguf.types import BY_NAME, FType, parse_ftype
from iqk_studio.recipe import classify
from iqk_studio.recipe.ecma import translate
from iqk_studio.recipe.gettype import INTERLEAVED, QuantizeAbort, change_type_if_necessary, get_type
from iqk_studio.recipe.lint import lint_plan
from iqk_studio.recipe.mixes import Counters, Options
from iqk_studio.recipe.model import ModelFacts, TensorRef, model_facts, tensor_refs
from iqk_studio.recipe.records import CLASS_OPTIONS, Lint, Plan, PlanEntry, Recipe, Rule

VERY_LOW_BPW = {"iq2_xxs", "iq2_xxs_r4", "iq2_xs", "iq2_xs_r4", "iq2_s", "iq2_s_r4", "iq1_s",
                "iq1_s_r4", "iq1_m", "iq1_m_r4", "iq1_kt", "iq2_kt"}
class ModelView:
    """Per-model facts computed once and reused by every re-plan (plus rule-match caches)."""

    def __init__(self, model_like):
        self.tensors: tuple[TensorRef, ...] = tensor_refs(model_like)
        self.metadata = dict(model_like.metadata)
        self.facts: ModelFacts = model_facts(self.metadata, self.tensors)
        self.names = tuple(t.name for t in self.tensors)
        self.classes = tuple(classify.tensor_class(n) for n in self.names)
        self.layers = tuple(t.layer for t in self.tensors)
        self.source_bytes = tuple(t.qtype.nbytes(t.shape) for t in self.tensors)
        self.rows = tuple(t.n_elements // t.shape[0] if t.shape[0] else 0 for t in self.tensors)
        self.src_quantized = tuple(t.qtype.is_quantized for t in self.tensors)
        self.n_elements = tuple(t.n_elements for t in self.tensors)
        self.skip = tuple(_static_skip(t) for t in self.tensors)  # recipe-independent part
        self._matches: dict[str, frozenset[int]] = {}

    def matches(self, pattern: str) -> frozenset[int]:
        """Indices of tensors whose name the rule's regex finds (regex_search); cached."""
        hit = self._matches.get(pattern)
        if hit is None:
            rx = translate(pattern).regex
            hit = frozenset() if rx is None else frozenset(
                i for i, n in enumerate(self.names) if rx.search(n))
            if len(self._matches) > 4096:  # a long editing session: start over
                self._matches.clear()
            self._matches[pattern] = hit
        return hit


_VIEWS: OrderedDict[int, tuple[object, ModelView]] = OrderedDict()


def model_view(model_like) -> ModelView:
    """The cached ModelView of a model (keyed by its tensors dict; the 8 most recent kept)."""
    if isinstance(model_like, ModelView):
        return model_like
    key = id(model_like.tensors)
    got = _VIEWS.get(key)
    if got is not None and got[0] is model_like.tensors and len(got[1].names) == len(
            model_like.tensors):
        _VIEWS.move_to_end(key)
        return got[1]
    view = ModelView(model_like)
    _VIEWS[key] = (model_like.tensors, view)  # holding the dict keeps its id from being reused
    while len(_VIEWS) > 8:
        _VIEWS.popitem(last=False)
    return view


def imatrix_entry(name: str, names) -> bool:
    """Whether llama-quantize finds imatrix data for a tensor, with its name fallbacks."""
    return any(c in names for c in candidate_names(name))


def resolve_options(recipe: Recipe, ftype: FType, has_imatrix: bool | None = None) -> Options:
    """Per-class options as llama-quantize reads them: an unknown or miss-cased name is 'unset'."""
    vals = {field: getattr(recipe, field) for field in CLASS_OPTIONS}
    vals = {field: v if v in BY_NAME else None for field, v in vals.items()}
    return Options(ftype=ftype.name, default_type=ftype.default_type,
                   has_imatrix=recipe.has_imatrix if has_imatrix is None else has_imatrix,
                   **vals)


def _not_candidate(t: TensorRef, skip: str | None, recipe: Recipe, o: Options) -> str | None:
    """Why llama-quantize never quantizes this tensor (:1455-1495), or None for a candidate."""
    n = t.name
    if skip:
        return skip
    if recipe.leave_output_tensor and n == "output.weight":
        return "--leave-output-tensor"
    if "ffn_gate_inp.weight" in n and o.ffn_gate_inp_type in (None, t.qtype.name):
        return "router (ffn_gate_inp): quantized only with --ffn-gate-inp-type"
    return None


def _static_skip(t: TensorRef) -> str | None:
    """The recipe-independent candidate tests."""
    n = t.name
    if t.qtype.name in ("i8", "i16", "i32", "i64"):
        return "integer tensor: never quantized"
    if not (n.endswith("weight") or (len(n) == 5 and "weight" not in n)):
        return "name does not end in 'weight': never quantized"
    if t.n_dims < 2:
        return "1-D tensor: never quantized"
    if "_norm.weight" in n:
        return "norm: never quantized"
    if n in ("position_embd.weight", "token_types.weight"):
        return "position / token-type embedding: never quantized"
    for s in ("ssm_conv1d", "ssm_x.weight", "ssm_dt.weight", "attn_rel_b.weight"):
        if s in n:
            return f"{s.split('.')[0]}: never quantized"
    return None


def _rules(recipe: Recipe, ftype: FType, view: ModelView) -> dict[int, tuple[int, Rule]]:
    """Tensor index -> (index, rule) of the first usable rule that matches it (first match
    wins); invalid rules are dropped (llama-quantize would refuse them, lint says so)."""
    if recipe.pure or not BY_NAME[ftype.default_type].is_quantized:
        return {}
    first: dict[int, tuple[int, Rule]] = {}
    for i, r in enumerate(recipe.rules):
        if r.type_name in BY_NAME and translate(r.pattern).regex is not None:
            for j in view.matches(r.pattern):
                if j not in first:
                    first[j] = (i, r)
    return first


def _post_overrides(t: TensorRef, o: Options, new: str, reasons: list[str]) -> str:
    """:1561-1610 options applied after get_type (also with --pure)."""
    n = t.name
    conds = {"token_embedding_type": n == "token_embd.weight",
             "per_layer_token_embedding_type": n == "per_layer_token_embd.weight",
             "output_tensor_type": n == "output.weight",
             "ffn_gate_inp_type": "ffn_gate_inp.weight" in n}
    if not (any(getattr(o, field) for field in conds) or n == "token_embd.weight"):
        return new
    for field, cond in conds.items():
        opt, flag = getattr(o, field), CLASS_OPTIONS[field]
        if opt and cond and opt != new:
            reasons.append(f"{flag} {opt}")
            new = opt
    if n == "token_embd.weight" and new in INTERLEAVED:
        reasons.append(f"token embeddings cannot be row-interleaved: {new} → {INTERLEAVED[new][0]}")
        new = INTERLEAVED[new][0]
    return new


_ROW_BYTES: dict[tuple[str, int], int] = {}


def _nbytes(type_name: str, ne0: int, rows: int) -> tuple[int, str | None]:
    """ggml_nbytes of the new tensor (block-1 types: type_size per element)."""
    rb = _ROW_BYTES.get((type_name, ne0))
    if rb is None:
        qt = BY_NAME[type_name]
        rb = qt.row_meta + -(-ne0 * qt.type_size // qt.block)
        _ROW_BYTES[(type_name, ne0)] = rb
    if ne0 % BY_NAME[type_name].block:
        return rb * rows, (f"ne0 {ne0} is not a multiple of {type_name}'s block "
                           f"{BY_NAME[type_name].block}: llama-quantize cannot write this tensor")
    return rb * rows, None


def _choose(i: int, t: TensorRef, recipe: Recipe, o: Options, view: ModelView, c: Counters,
            custom: dict[int, tuple[int, Rule]], base_quantized: bool):
    """Type, reasons, rule index and fallback origin of candidate tensor i (before the checks)."""
    new, reasons, rule_index, fallback_from = o.default_type, [], None, None
    if recipe.pure:
        reasons.append(f"--pure: {o.ftype} → {new}")
        working = change_type_if_necessary(new, t.shape[0])
        if working != new:
            reasons.append(f"fallback: {new} needs ne0 % 256 == 0 (ne0 = {t.shape[0]}) → {working}")
            fallback_from, new = new, working
    elif base_quantized:
        ctype, cwhy = None, ""
        hit = custom.get(i)
        if hit is not None:
            rule_index, rule = hit
            ctype, cwhy = rule.type_name, f"rule {rule_index + 1} '{rule}' → {rule.type_name}"
        new, reasons, fallback_from = get_type(c, o, view.facts, t, ctype, cwhy)
    else:
        reasons.append(f"{o.ftype} is not a quantized type → {new}")
    return _post_overrides(t, o, new, reasons), reasons, rule_index, fallback_from


def _checks(t: TensorRef, recipe: Recipe, o: Options, new: str, reasons: list[str], imatrix_names,
            src_quantized: bool):
    """After the type is final: imatrix rule, requantize, interleaved row count (:1683-1711).
    Returns (type written, notes, type replaced by the row-count fallback or None)."""
    notes = []
    has = o.has_imatrix and (imatrix_names is None or imatrix_entry(t.name, imatrix_names))
    if (not recipe.ignore_imatrix_rules and not has
            and (new in VERY_LOW_BPW or (new == "q2_K" and o.ftype == "Q2_K_S"))
            and t.name not in ("token_embd.weight", "output.weight")):
        notes.append(f"{new} without an imatrix: llama-quantize stops with 'Missing importance "
                     "matrix for tensor ... in a very low-bit quantization'")
    if src_quantized and not recipe.allow_requantize:
        notes.append(f"source is {t.qtype.name}: llama-quantize refuses without --allow-requantize")
    if new in INTERLEAVED:
        base, rows = INTERLEAVED[new]
        ne1 = t.shape[1] if len(t.shape) > 1 else 1
        if ne1 % rows:
            reasons.append(f"ne1 {ne1} % {rows} != 0: {new} stored as {base}")
            return base, notes, new
    return new, notes, None


def plan(model_like, recipe: Recipe, imatrix_names=None) -> Plan:
    """Every tensor's final type, bytes and reason, totals, breakdown, placement and lint.
    imatrix_names: the entry names of the imatrix, when known (e.g. Imatrix.values); without
    them an imatrix path in the recipe is taken to cover every tensor."""
    view = model_view(model_like)
    warn: list[Lint] = []
    try:
        ftype = parse_ftype(recipe.base)
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    copy_only = recipe.base.strip().upper() == "COPY"
    if imatrix_names is not None:
        imatrix_names = frozenset(imatrix_names)
    o = resolve_options(recipe, ftype, None if imatrix_names is None else
                        bool(recipe.imatrix) and bool(imatrix_names))
    custom = _rules(recipe, ftype, view)
    base_quantized = BY_NAME[ftype.default_type].is_quantized
    f = view.facts
    if f.n_attention_wv not in (0, f.n_layer, 3 * f.n_layer) and f.arch not in ("deci", "gemma4"):
        warn.append(Lint("abort", "error", "llama-quantize asserts 'n_attention_wv is unexpected': "
                         f"{f.n_attention_wv} attn_v/attn_qkv tensors for {f.n_layer} layers"))
    c = Counters()
    entries, cands = [], []
    device = classify.devices(view.names, recipe.placement, view.matches)
    for i, t in enumerate(view.tensors):
        why_not = ("COPY: tensors copied unchanged" if copy_only
                   else _not_candidate(t, view.skip[i], recipe, o))
        src = t.qtype.name
        notes: list[str] = []
        rule_index = fallback_from = None
        if why_not:
            new, reasons = src, [why_not]
        else:
            cands.append(i)
            try:
                new, reasons, rule_index, fallback_from = _choose(i, t, recipe, o, view, c, custom,
                                                                  base_quantized)
            except QuantizeAbort as e:
                warn.append(Lint("abort", "error", f"llama-quantize aborts: {e}", t.name))
                new, reasons = src, [f"llama-quantize aborts here: {e}"]
            if new == src:
                reasons.append("same as the source type: copied")
            else:
                new, notes, row_fb = _checks(t, recipe, o, new, reasons, imatrix_names,
                                             view.src_quantized[i])
                fallback_from = fallback_from or row_fb
        quantized = new != src
        nbytes, bad = (_nbytes(new, t.shape[0], view.rows[i]) if quantized
                       else (view.source_bytes[i], None))
        if bad:
            notes.append(bad)
            warn.append(Lint("block-size", "error", bad, t.name))
        entries.append(PlanEntry(  # positional: name shape source_type type bytes n_elements
            t.name, t.shape, src, new, nbytes, view.n_elements[i], "; ".join(reasons),
            view.classes[i], view.layers[i], device[i], quantized, rule_index, fallback_from,
            tuple(notes)))
    return _totals(tuple(entries), recipe, view, warn, frozenset(cands))


def _totals(entries: tuple[PlanEntry, ...], recipe: Recipe, view: ModelView,
            warn: list[Lint], candidates: frozenset[int]) -> Plan:
    by_class = {k: 0 for k in classify.CLASSES}
    by_layer: dict[int, int] = {}
    by_device: dict[str, int] = {}
    total = nel = 0
    source = sum(view.source_bytes)
    for e in entries:
        total += e.bytes
        nel += e.n_elements
        by_class[e.cls] += e.bytes
        key = -1 if e.layer is None else e.layer
        by_layer[key] = by_layer.get(key, 0) + e.bytes
        by_device[e.device] = by_device.get(e.device, 0) + e.bytes
    draft = Plan(entries, total, source, nel, by_class, dict(sorted(by_layer.items())),
                 by_device, ())
    return Plan(entries, total, source, nel, by_class, draft.by_layer, by_device,
                tuple(warn) + lint_plan(draft, recipe, view.matches, candidates))
