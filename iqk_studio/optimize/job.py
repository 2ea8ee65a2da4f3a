"""optimize_job: measure what is not cached (weighted errors of every tensor at every option,
KLD of every group at its probe options), solve the knapsack under the budget, write the
solution as a compact recipe, and verify the best candidates in memory. A generator of events;
each measurement is stored as it is made, so a cancelled run loses nothing it finished."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from iqk_studio.jobs.events import Failed, Finished, Progress
from iqk_studio.optimize.costs import CostTable, table_from_rows, weighted_error
from iqk_studio.optimize.solver import Choice as SChoice
from iqk_studio.optimize.solver import Group, Infeasible, lagrangian, solve
from iqk_studio.optimize.space import DEFAULT_TYPES, Space, assignment, build_space, layer_of
from iqk_studio.recipe.compact import compact_rules
from iqk_studio.recipe.plan import plan
from iqk_studio.recipe.records import Recipe, Rule
from iqk_studio.results.records import CostKey, CostRow

METHOD = "kld-v2"  # bump when what a stored measurement means changes (v2: activations
# quantized in the matmuls as ik_llama.cpp does, engine of issue 15)


@dataclass(frozen=True)
class Budget:
    """Bytes allowed: one total, or one per device class (GPU / CPU)."""

    total: int | None = None
    gpu: int | None = None
    cpu: int | None = None

    def per_device(self, space: Space) -> dict[str, int]:
        if self.total is not None:
            return {"all": self.total}
        return {"GPU": self.gpu if self.gpu is not None else 0,
                "CPU": self.cpu if self.cpu is not None else 0}


@dataclass(frozen=True)
class Measured:
    """One KLD measurement (event): a group at an option key."""

    group: str
    key: str
    kld: float
    kld_err: float
    seconds: float
    cached: bool


@dataclass(frozen=True)
class Candidate:
    recipe: Recipe
    types: dict  # tensor -> type
    total_bytes: int
    bytes_by_device: dict
    predicted: float
    measured: float = math.nan  # KLD of the whole recipe, verified in memory
    measured_err: float = math.nan


@dataclass(frozen=True)
class OptimizeResult:
    recipe: Recipe
    plan: object  # recipe.plan of the chosen recipe
    predicted: dict  # what --json prints under "predicted"
    candidates: tuple[Candidate, ...] = ()
    timings: dict = field(default_factory=dict)  # phase -> seconds


def probe_keys(space: Space, label: str, probes: int) -> list[str]:
    """Option keys measured directly: all for groups outside blk.N (few, big, unusual);
    else `probes` spread over the options by bytes, starting with the smallest."""
    opts = space.options[label]
    if layer_of(label) is None or probes >= len(opts):
        return [o.key for o in opts]
    if probes <= 1:
        return [opts[0].key]
    idx = sorted({round(i * (len(opts) - 1) / (2 * (probes - 1))) for i in range(probes)})
    return [opts[i].key for i in idx]


def _num(v) -> float | None:
    """A float for JSON (None when unknown)."""
    return float(v) if v is not None and math.isfinite(v) else None


def _recipe_id(recipe: Recipe) -> str:
    from iqk_studio.recipe.textfile import dumps

    return "recipe:" + hashlib.sha256(dumps(recipe).encode()).hexdigest()[:32]


def recipe_for(space: Space, types: dict, model_like, imatrix_names=None) -> Recipe:
    """The solution as compact rules, checked with plan(): every tensor gets exactly its type
    (else explicit anchored rules, also checked)."""
    import re

    for rules in (compact_rules(types),
                  tuple(Rule("^" + re.escape(n) + "$", t) for n, t in sorted(types.items()))):
        r = space.template.with_(rules=rules)
        got = {e.name: e.type for e in plan(model_like, r, imatrix_names).entries
               if e.name in types}
        if got == types:
            return r
    raise AssertionError("no recipe plans to the solution (a defect: please report it)")


def check_budget(space: Space, budget: Budget) -> None:
    """Infeasible (before anything is measured) when even the smallest options do not fit."""
    budgets = budget.per_device(space)
    need: dict[str, int] = {}
    for label, opts in space.options.items():
        dev = "all" if "all" in budgets else space.devices[label]
        need[dev] = need.get(dev, 0) + opts[0].bytes
    for dev, b in space.fixed.items():
        dev = "all" if "all" in budgets else dev
        need[dev] = need.get(dev, 0) + b
    for dev, n in need.items():
        if n > budgets.get(dev, 0):
            where = "" if dev == "all" else f" on {dev}"
            raise Infeasible(f"budget too small{where}: the smallest allowed types need {n} "
                             f"bytes ({n / 2**30:.4f} GiB), {n - budgets.get(dev, 0)} more")


def _candidates(space: Space, table: CostTable, budget: Budget, n: int):
    """Distinct solutions: the exact optimum, then with pessimistic costs (+2 standard errors
    of each measured point), then the Lagrangian's greedy solution."""
    budgets = budget.per_device(space)
    fixed = dict(space.fixed)
    if "all" in budgets:
        fixed = {"all": sum(fixed.values())}

    def groups(pess: bool) -> list[Group]:
        out = []
        for label, opts in space.options.items():
            cs = []
            pts = table.measured.get(label, {})
            for o in opts:
                c = table.group_cost(label, space.groups[label], o.types)
                if c is None:
                    raise ValueError(f"no cost for {label} at {o.key}")
                if pess and o.key in pts and math.isfinite(pts[o.key][2]):
                    c += 2 * pts[o.key][2]
                cs.append(SChoice(o.key, o.bytes, c))
            dev = "all" if "all" in budgets else space.devices[label]
            out.append(Group(label, dev, tuple(cs)))
        return out

    base = groups(False)
    sols = [solve(base, budgets, fixed).picks]
    if n > 1:
        sols.append(solve(groups(True), budgets, fixed).picks)
    if n > 2 and "all" in budgets:
        sols.append(lagrangian(base, budgets["all"] - fixed["all"])[0])
    out, seen = [], set()
    for picks in sols:
        keys = tuple(sorted((g, c.key) for g, c in picks.items()))
        if keys not in seen:
            seen.add(keys)
            cost = sum(table.group_cost(g, space.groups[g], space.option(g, c.key).types)
                       for g, c in picks.items())
            out.append(({g: c.key for g, c in picks.items()}, cost))
    return out[:max(n, 1)]


def _open_store(store):
    """A ResultsStore, or None (no caching) with the reason."""
    from iqk_studio.results.store import ResultsStore, StoreError

    if store is False:
        return None, ""
    if isinstance(store, ResultsStore):
        return store, ""
    try:
        return ResultsStore(store), ""
    except (StoreError, OSError) as e:
        return None, f"results store unavailable, measurements are not kept: {e}"


def _drive(gen, offset: int, span: int, total: int, prefix: str):
    """Run a generator of Progress (returning a value), rescaling it into [offset, +span)."""
    try:
        while True:
            ev = next(gen)
            if ev.total:
                yield Progress(offset + ev.done * span // ev.total, total, prefix + ev.message)
    except StopIteration as stop:
        return stop.value


def optimize_job(model_path, text_path, budget: Budget, types=DEFAULT_TYPES, n_ctx: int = 512,
                 chunks: int = 1, imatrix=None, probes: int = 1, verify: int = 2, store=None,
                 placement=()) -> Iterator[object]:
    """Events: Progress (per phase), Measured (each KLD probe, cached or new), Finished with an
    OptimizeResult, or Failed with a one-line reason. store: a path, a ResultsStore, None for
    the default store, False for none."""
    from iqk_studio.engine.weights import GGUFWeights, QuantizedWeights
    from iqk_studio.gguf.imatrix import load_imatrix
    from iqk_studio.gguf.reader import open_model
    from iqk_studio.jobs.recipe_eval import tensor_importance
    from iqk_studio.results.recording import file_id, model_id

    times: dict[str, float] = {}
    t0 = time.perf_counter()
    st, why = _open_store(store)
    own_store = st is not None and st is not store
    if why:
        yield Progress(0, 0, why)
    try:
        with open_model(model_path) as model:
            imx = load_imatrix(imatrix) if imatrix else None
            template = Recipe(base="Q8_0", imatrix=str(imatrix) if imatrix else None,
                              placement=tuple(placement), allow_requantize=any(
                                  t.qtype.is_quantized for t in model.tensors.values()))
            names = frozenset(imx.values) if imx is not None else None
            space = build_space(model, types, template, names)
            try:
                check_budget(space, budget)
            except Infeasible as e:
                yield Failed(str(e))
                return
            mid = model_id(model_path)
            if mid is None:
                yield Failed(f"cannot read {model_path}")
                return
            tid = file_id(text_path)
            if tid is None:
                yield Failed(f"cannot read the text {text_path}")
                return
            key = CostKey(mid, tid, n_ctx, chunks,
                          (file_id(imatrix) or "") if imatrix else "", METHOD)
            rows = st.get_costs(key) if st is not None else []
            table = table_from_rows(rows, space.sources, space.groups)
            need_err = sorted({(n, t) for g, opts in space.options.items() for o in opts
                               for n, t in zip(space.groups[g], o.types)
                               if table.tensor_error(n, t) is None})
            need_kld = [(g, k) for g in space.options for k in probe_keys(space, g, probes)
                        if k not in table.measured.get(g, {})]
            cached = {r.group: r for r in rows if r.group.startswith("recipe:")}
            state = {"base": None, "collector": None, "tried": False}
            if need_err or need_kld:
                ok = yield from _start_base(model, text_path, n_ctx, chunks, state)
                if not ok:
                    return
            base, collector = state["base"], state["collector"]
            times["base"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            acts = collector.imatrix()[0].values if base is not None and need_err else {}
            yield from _errors(model, space, table, need_err, acts, imx, key, st,
                               base.fw.ws if base is not None else GGUFWeights(model))
            times["errors"] = time.perf_counter() - t1
            t1 = time.perf_counter()
            if base is not None:
                for k, (g, okey) in enumerate(need_kld):
                    opt = space.option(g, okey)
                    tmap = dict(zip(space.groups[g], opt.types))
                    s0 = time.perf_counter()
                    ws = QuantizedWeights(base.fw.ws, tmap, tensor_importance(model, tmap, imx))
                    for _, _, name in ws.prepare():  # a cancel lands within one row block
                        yield Progress(k, len(need_kld), f"KLD {k + 1}/{len(need_kld)}: "
                                       f"quantizing {name}")
                    res = yield from _drive(base.evaluate(ws, base.start_for(tmap), g), k,
                                            1, len(need_kld), f"KLD {k + 1}/{len(need_kld)} ")
                    s = res.stats
                    kld, kld_err = float(s.kld), float(s.kld_err)
                    err = table.group_error(space.groups[g], opt.types) or 0.0
                    row = CostRow(g, okey, kld, kld_err, float(s.ln_ratio), math.nan, opt.bytes,
                                  time.perf_counter() - s0)
                    if st is not None:
                        st.put_costs(key, [row])
                    table.measured.setdefault(g, {})[okey] = (err, kld, kld_err)
                    yield Measured(g, okey, kld, kld_err, row.seconds, False)
            if table.measured:
                table.finish()
            elif base is None:
                table.scale = 1.0  # no engine: the weighted error itself is the cost
            times["kld"] = time.perf_counter() - t1
            t1 = time.perf_counter()
            try:
                sols = _candidates(space, table, budget, max(verify, 1))
            except Infeasible as e:
                yield Failed(str(e))
                return
            cands = []
            for picks, cost in sols:
                types_ = assignment(space, picks)
                r = recipe_for(space, types_, model, names)
                pl = plan(model, r, names)
                cands.append(Candidate(r, types_, pl.total_bytes,
                                       {"GPU": pl.gpu_bytes, "CPU": pl.cpu_bytes}, cost))
            times["solve"] = time.perf_counter() - t1
            t1 = time.perf_counter()
            if verify > 0 and any(_recipe_id(c.recipe) not in cached for c in cands):
                ok = yield from _start_base(model, text_path, n_ctx, chunks, state)
                if not ok:
                    return
                base = state["base"]
            if verify > 0 and (base is not None or cached):
                cands = yield from _verify(model, base, cands, imx, key, st, cached)
            times["verify"] = time.perf_counter() - t1
            best = min(cands, key=lambda c: (c.measured if math.isfinite(c.measured)
                                             else c.predicted))
            pl = plan(model, best.recipe, names)
            unit = ("mean KLD vs the source model" if base is not None or any(
                table.measured.values()) else "imatrix-weighted squared quantization error")
            n_meas = sum(len(v) for v in table.measured.values())
            predicted = {"kld": float(best.predicted), "unit": unit,
                         "measured_kld": _num(best.measured),
                         "measured_kld_err": _num(best.measured_err), "n_ctx": n_ctx,
                         "chunks": chunks,
                         "groups": len(space.options), "measurements": n_meas,
                         "candidates": [{"predicted_kld": float(c.predicted),
                                         "measured_kld": _num(c.measured),
                                         "total_bytes": c.total_bytes} for c in cands]}
            times["total"] = time.perf_counter() - t0
            what = "KLD" if unit.startswith("mean KLD") else "weighted error"
            yield Finished(f"{pl.total_bytes / 2**30:.3f} GiB, {pl.bpw:.3f} bpw, predicted {what} "
                           f"{best.predicted:.5f}",
                           OptimizeResult(best.recipe, pl, predicted, tuple(cands), times))
    finally:
        if own_store:
            st.close()


def _start_base(model, text_path, n_ctx, chunks, state):
    """Run the base pass once (with an activation collector); False after a Failed event.
    A model the engine cannot run leaves state["base"] None (with a Progress saying so)."""
    from iqk_studio.engine.model import ModelError
    from iqk_studio.engine.tokenizer import UnsupportedTokenizer
    from iqk_studio.engine.weights import WeightError
    from iqk_studio.jobs.imatrix import ImatrixCollector
    from iqk_studio.jobs.perplexity import TextTooShort
    from iqk_studio.jobs.sensitivity import open_base

    if state["tried"]:
        return True
    state["tried"] = True
    yield Progress(0, 0, "tokenizing the text")
    try:
        collector = ImatrixCollector(0)
        base = open_base(model, text_path, n_ctx, chunks, collector)
        collector.n_expert = base.fw.cfg.n_expert
        yield from base.run()
    except TextTooShort as e:
        yield Failed(str(e).replace("\n", "; "))
        return False
    except (ModelError, WeightError, UnsupportedTokenizer, NotImplementedError) as e:
        yield Progress(0, 0, f"the built-in engine cannot run this model ({e}): costs from the "
                       "quantization error (weighted by the imatrix when one is given)")
        return True
    state["base"], state["collector"] = base, collector
    return True


def _errors(model, space, table, need, acts, imx, key, st, ws):
    """Weighted quantization errors of (tensor, type) pairs not cached; stored per tensor."""
    from iqk_studio.jobs.recipe_eval import tensor_importance

    by_tensor: dict[str, list[str]] = {}
    for n, t in need:
        by_tensor.setdefault(n, []).append(t)
    for k, (n, ts) in enumerate(by_tensor.items()):
        yield Progress(k, len(by_tensor), f"quantization error of {n}")
        w = ws.get(n)
        imp = tensor_importance(model, [n], imx).get(n)
        weight = acts.get(n)
        if weight is None and imx is not None:
            weight = imp
        out = []
        for t in ts:
            e = weighted_error(w, t, weight, imp)
            table.errors[(n, t)] = e
            out.append(CostRow(n, t, err=e))
        if st is not None:
            st.put_costs(key, out)
    for g, pts in table.measured.items():  # points read from the store before these errors
        for okey, (err, kld, kerr) in list(pts.items()):
            if err <= 0:
                e = table.group_error(space.groups[g], space.option(g, okey).types) if any(
                    o.key == okey for o in space.options.get(g, ())) else None
                pts[okey] = (e or 0.0, kld, kerr)


def _verify(model, base, cands, imx, key, st, cached):
    """Each candidate's KLD over the measurement chunks, quantized in memory (cached by recipe)."""
    from iqk_studio.engine.weights import QuantizedWeights
    from iqk_studio.jobs.recipe_eval import tensor_importance

    out = []
    for k, c in enumerate(cands):
        rid = _recipe_id(c.recipe)
        hit = cached.get(rid)
        if hit is not None and math.isfinite(hit.kld):
            out.append(Candidate(c.recipe, c.types, c.total_bytes, c.bytes_by_device,
                                 c.predicted, hit.kld, hit.kld_err))
            continue
        if base is None:
            out.append(c)
            continue
        changed = {n: t for n, t in c.types.items() if t != model.tensors[n].qtype.name}
        s0 = time.perf_counter()
        ws = QuantizedWeights(base.fw.ws, changed, tensor_importance(model, changed, imx))
        for _, _, name in ws.prepare():
            yield Progress(k, len(cands), f"verifying candidate {k + 1}: quantizing {name}")
        res = yield from _drive(base.evaluate(ws, base.start_for(changed), "verify"), k, 1,
                                len(cands), f"verifying candidate {k + 1}/{len(cands)}: ")
        s = res.stats
        if st is not None:
            st.put_costs(key, [CostRow(rid, "", s.kld, s.kld_err, s.ln_ratio, math.nan,
                                       c.total_bytes, time.perf_counter() - s0)])
        out.append(Candidate(c.recipe, c.types, c.total_bytes, c.bytes_by_device, c.predicted,
                             float(s.kld), float(s.kld_err)))
    return out
