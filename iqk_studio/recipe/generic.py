"""The generic branch of llama_tensor_get_type (src/llama-quantize.cpp:542-835): substring tests
attn_v.weight → attn_k → attn_q → ffn_down → attn_output.weight → ffn_gate → ffn_up, in that order.
"""

from __future__ import annotations

from iqk_studio.recipe.mixes import Counters, Options, use_more_bits
from iqk_studio.recipe.model import ModelFacts

# :645-661 the gqa >= 4 bump of attn_v
GQA_BUMP = {"q2_K": "iq3_s", "iq3_xxs": "iq3_s", "q2_k_r4": "iq3_k_r4", "iq3_xxs_r4": "iq3_k_r4",
            "q3_K": "q4_K", "iq3_s": "q4_K", "iq3_k": "iq4_k", "iq3_ks": "iq4_ks",
            "iq2_kl": "iq4_ks", "iq3_s_r4": "q4_k_r4", "q3_k_r4": "q4_k_r4", "q4_K": "q5_K",
            "iq4_xs": "q5_K", "iq4_nl": "q5_K", "iq4_k": "iq5_k", "iq4_ks": "iq5_k",
            "iq4_nl_r4": "q5_K", "iq4_xs_r8": "q5_K", "q5_K": "q6_K", "iq5_k": "iq6_k",
            "iq5_ks": "iq6_k"}
# :770-780 attn_output → q5_K for MoE models (n_expert >= 4)
ATTN_OUT_MOE = {"Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M",
                "IQ3_S", "IQ3_M", "IQ4_XS", "IQ4_K", "IQ4_KSS", "IQ4_KS", "IQ4_KS_R4", "IQ5_KS",
                "IQ5_KS_R4", "IQ2_K", "IQ3_K", "IQ3_KL", "Q4_K_R4", "IQ4_NL_R4", "IQ4_XS_R8",
                "Q3_K_R4", "IQ3_KT", "IQ3_KS", "Q2_K_R4", "IQ4_K_R4", "IQ3_K_R4", "IQ2_K_R4",
                "IQ3_XXS_R4", "IQ3_S_R4"}
ATTN_OUT_DENSE = {"Q2_K": "q3_K", "IQ3_XXS": "iq3_s", "IQ3_XXS_R4": "iq3_k_r4", "Q3_K_M": "q4_K",
                  "Q3_K_L": "q5_K", "IQ3_M": "iq4_k", "IQ2_K": "iq3_k", "IQ2_K_R4": "iq3_k_r4",
                  "IQ3_KL": "iq4_ks"}
IQ4_DOWN = {"IQ4_NL", "IQ4_XS", "IQ4_KS", "IQ4_KSS", "IQ4_NL_R4", "IQ4_XS_R8"}


def _big_vocab(f: ModelFacts) -> bool:
    return f.n_vocab >= 127999 and f.model_type in ("8B", "70B")


def attn_v(c: Counters, o: Options, f: ModelFacts, new: str):
    i, n = c.i_attention_wv, f.n_attention_wv
    c.i_attention_wv += 1
    ft, gqa, E = o.ftype, f.n_gqa, f.n_expert
    if o.attn_v_type:
        return o.attn_v_type, f"--attn-v-type {o.attn_v_type}"
    if E >= 4:
        return "q8_0", f"attn_v with n_expert {E} >= 4"
    if f.model_type == "70B":
        t = {"q3_K": "q5_K", "q4_K": "q5_K", "iq3_k": "iq5_k"}.get(new, new)
        return t, "attn_v of a 70B model" + ("" if t != new else " (kept; gqa bumps skipped)")
    table = {
        "Q2_K": lambda: "q4_K" if gqa >= 4 else "q3_K",
        "IQ2_K": lambda: "iq4_k" if gqa >= 2 else "iq3_k",
        "IQ2_K_R4": lambda: "iq4_k_r4" if gqa >= 2 else "iq3_k_r4",
        "Q2_K_S": lambda: "q4_K" if gqa >= 4 else None,
        "Q2_K_R4": lambda: "q4_k_r4" if gqa >= 4 else None,
        "IQ3_XXS": lambda: "q4_K" if gqa >= 4 else "iq3_k" if gqa >= 2
        else ("iq3_xxs" if o.has_imatrix else "iq3_s"),
        "IQ3_KT": lambda: "iq4_k" if gqa >= 4 else "iq3_k",
        "IQ4_KT": lambda: "iq5_k" if gqa >= 4 else "iq4_k",
        "IQ3_XXS_R4": lambda: "q4_k_r4" if gqa >= 4 else "iq3_k_r4" if gqa >= 2
        else ("iq3_xxs_r4" if o.has_imatrix else "iq3_k_r4"),
        "IQ3_XS": lambda: "iq4_k" if gqa >= 2 else None,
        "IQ3_S": lambda: "iq4_k" if gqa >= 2 else None,
        "IQ3_S_R4": lambda: "iq4_k_r4" if gqa >= 2 else None,
        "IQ3_K": lambda: "iq4_k" if gqa >= 2 else None,
        "IQ3_KS": lambda: "iq4_ks" if gqa >= 2 else None,
        "IQ2_KL": lambda: "iq4_ks" if gqa >= 2 else None,
        "IQ3_K_R4": lambda: "iq4_k_r4" if gqa >= 2 else None,
        "IQ3_KL": lambda: "iq5_k" if gqa >= 2 else "iq4_k",
        "IQ3_M": lambda: "iq5_k" if gqa >= 2 else "iq4_k",
        "Q3_K_M": lambda: "q5_K" if i < 2 else "q4_K",
        "Q3_K_L": lambda: "q5_K",
        "IQ4_KS_R4": lambda: "iq5_k_r4" if gqa >= 2 else None,
        "IQ4_K": lambda: "iq5_k" if gqa >= 2 else None,
        "IQ4_K_R4": lambda: "iq5_k" if gqa >= 2 else None,
        "Q4_K_M": lambda: "q6_K" if use_more_bits(i, n) else None,
        "Q5_K_M": lambda: "q6_K" if use_more_bits(i, n) else None,
        "Q4_K_S": lambda: "q5_K" if i < 4 else None,
        "Q4_K_R4": lambda: "q5_K" if i < 4 else None,
    }
    for ft4 in IQ4_DOWN:
        table[ft4] = lambda: "iq5_k" if gqa >= 2 else None
    if ft in table:
        t = table[ft]()
        if t is not None:
            return t, f"{ft} mix: attn_v #{i} of {n} (gqa {gqa})"
    if ft in ("Q5_K_S", "IQ5_K", "IQ5_KS"):  # the chain stops here, bump or not
        if _big_vocab(f):
            return ("q6_K" if ft == "Q5_K_S" else "iq6_k"), f"{ft} mix: attn_v, n_vocab >= 127999"
        return None
    if gqa >= 4 and not (f.arch == "dflash-draft" and ft in ("Q4_K_M", "Q5_K_M")):
        if new in GQA_BUMP:
            return GQA_BUMP[new], f"attn_v bump for gqa {gqa} >= 4: {new} → {GQA_BUMP[new]}"
    return None


def attn_k(o: Options, f: ModelFacts):
    if o.attn_k_type:
        return o.attn_k_type, f"--attn-k-type {o.attn_k_type}"
    if f.n_expert >= 4:
        return "q8_0", f"attn_k* with n_expert {f.n_expert} >= 4"
    if o.ftype == "IQ3_XS":
        return "iq3_xxs", "IQ3_XS mix: attn_k*"
    if o.ftype in ("IQ3_XXS", "IQ3_XXS_R4"):
        return "iq2_s", f"{o.ftype} mix: attn_k*"
    return None


def attn_q(o: Options, f: ModelFacts):
    if o.attn_q_type:
        return o.attn_q_type, f"--attn-q-type {o.attn_q_type}"
    ft = o.ftype
    if ft == "IQ3_XS":
        return "iq3_xxs", "IQ3_XS mix: attn_q*"
    if ft in ("IQ3_XXS", "IQ3_XXS_R4"):
        return "iq2_s", f"{ft} mix: attn_q*"
    big = {"Q5_K_S": "q4_K", "IQ5_K": "iq4_k", "IQ5_KS": "iq4_ks"}
    if ft in big and _big_vocab(f):
        return big[ft], f"{ft} mix: attn_q*, n_vocab >= 127999"
    return None


def ffn_down(o: Options, f: ModelFacts, il: int, nl: int):
    if o.ffn_down_type:
        return o.ffn_down_type, f"--ffn-down-type {o.ffn_down_type}"
    ft, im, falcon = o.ftype, o.has_imatrix, f.arch == "falcon"
    early, umb = il < nl // 8, use_more_bits(il, nl)
    why = f"{ft} mix: ffn_down of layer {il}/{nl}"
    if ft == "Q2_K":
        return "q3_K", why
    if ft in ("Q2_K_S", "Q2_K_R4"):
        return (("q4_K" if ft == "Q2_K_S" else "q4_k_r4"), why + " < L/8") if early else None
    if ft in ("IQ3_XXS", "IQ3_KT", "IQ3_XXS_R4") and not im:
        t = {"IQ3_XXS": ("q4_K", "q3_K"), "IQ3_KT": ("iq4_k", "iq3_k"),
             "IQ3_XXS_R4": ("q4_k_r4", "iq3_k_r4")}[ft]
        return t[0 if early else 1], why + " (no imatrix)"
    if ft == "Q3_K_M":
        t = "q5_K" if il < nl // 16 else "q4_K" if (not falcon or umb) else "q3_K"
        return t, why
    if ft == "IQ3_M" and (early or (f.n_expert >= 4 and umb)):
        return "iq4_k", why
    if ft == "Q3_K_L":
        return ("q4_K" if falcon else "q5_K"), why
    if ft == "IQ3_KL":
        return ("iq4_ks" if umb else "iq3_k"), why
    if ft == "Q4_K_M":
        if falcon:
            return ("q6_K" if il < nl // 16 else "q5_K" if umb else "q4_K"), why
        return ("q6_K", why + " (use_more_bits)") if umb else None
    if early and not im and ft in IQ4_DOWN:
        return "q5_K", why + " < L/8, no imatrix"
    if ft == "IQ4_KS_R4" and early and not im:
        return "q5_k_r4", why + " < L/8, no imatrix"
    if ft == "Q5_K_M" and umb:
        return "q6_K", why + " (use_more_bits)"
    if ft in ("Q4_K_S", "Q4_K_R4") and not falcon and early:
        return "q5_K", why + " < L/8"
    if ft in ("Q4_0", "Q5_0") and im and early:
        return ("q4_1" if ft == "Q4_0" else "q5_1"), why + " < L/8 with imatrix"
    if ft == "Q4_0_R8" and im and early:
        return "iq4_nl_r4", why + " < L/8 with imatrix"
    return None


def attn_output(o: Options, f: ModelFacts):
    if o.attn_output_type:
        return o.attn_output_type, f"--attn-output-type {o.attn_output_type}"
    ft = o.ftype
    if f.arch == "falcon":
        return ("q4_K", f"{ft} mix: attn_output (falcon)") if ft == "Q3_K_L" else None
    if f.n_expert >= 4:
        if ft in ATTN_OUT_MOE:
            return "q5_K", f"attn_output with n_expert {f.n_expert} >= 4"
        if ft == "IQ2_KL":
            return "iq4_ks", f"attn_output with n_expert {f.n_expert} >= 4"
        return None
    if ft == "IQ3_KT" and f.n_gqa >= 4:
        return "iq3_k", f"{ft} mix: attn_output (gqa >= 4)"
    if ft in ATTN_OUT_DENSE:
        return ATTN_OUT_DENSE[ft], f"{ft} mix: attn_output"
    return None


def ffn_gate_up(o: Options, opt: str | None, what: str, il: int, nl: int):
    if opt:
        return opt, f"--{what}-type {opt}"
    if o.ftype == "IQ3_XS" and nl // 8 <= il < 7 * nl // 8:
        return "iq3_xxs", f"IQ3_XS mix: {what} of layer {il}"
    if o.ftype == "IQ3_KL" and use_more_bits(il, nl):
        return "iq4_ks", f"IQ3_KL mix: {what} of layer {il} (use_more_bits)"
    return None
