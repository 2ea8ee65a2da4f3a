"""ik_llama.cpp's built-in mixes: llama_tensor_get_type's special branches (output, embeddings,
IQ1_S_R4/IQ1_M_R4, IQ2_KT, the IQ2_XXS family incl. IQ2_KS) at commit 8337e4cd3.

Each function returns (ggml type name, why) or None when the branch keeps the incoming type.
Line numbers refer to src/llama-quantize.cpp. The generic branch is in generic.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from iqk_studio.recipe.model import ModelFacts

OUT_Q5K = {"IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M", "IQ2_K", "IQ3_K",
           "IQ2_KS", "IQ3_K_R4", "IQ3_KS", "IQ2_K_R4", "IQ3_XXS_R4", "IQ2_KL", "IQ2_M_R4",
           "IQ1_S_R4", "IQ1_M_R4", "IQ2_KT", "IQ3_KT", "IQ1_KT"}
OUT_IQ5K_TIED = {"IQ3_S", "IQ3_M", "IQ3_KL", "IQ4_XS", "IQ3_S_R4", "IQ4_KS", "IQ4_KSS", "IQ4_KS_R4"}
OUT_KEEP = {"q8_0", "q8_0_r8", "iq6_k", "q6_k_r4", "q8_k_r8", "q8_KV", "q8_KV_r8"}
IQ2_FAMILY = {"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M", "IQ2_KS", "IQ2_XXS_R4",
              "IQ2_XS_R4", "IQ2_M_R4"}


@dataclass
class Counters:
    """quantize_state_internal's running counters (advance only inside llama_tensor_get_type)."""

    i_attention_wv: int = 0
    i_ffn_down: int = 0
    i_ffn_gate: int = 0
    i_ffn_up: int = 0


@dataclass(frozen=True)
class Options:
    """Recipe options resolved as llama-quantize parses them: exact type name or None (unset)."""

    ftype: str
    default_type: str
    has_imatrix: bool
    attn_q_type: str | None = None
    attn_k_type: str | None = None
    attn_v_type: str | None = None
    attn_qkv_type: str | None = None
    attn_output_type: str | None = None
    ffn_gate_type: str | None = None
    ffn_up_type: str | None = None
    ffn_down_type: str | None = None
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    per_layer_token_embedding_type: str | None = None
    ffn_gate_inp_type: str | None = None


def use_more_bits(i: int, n: int) -> bool:
    d = i - n // 8  # C's % truncates: a negative d never gives 2
    return i < n // 8 or i >= 7 * n // 8 or (d >= 0 and d % 3 == 2)


def output_rule(o: Options, f: ModelFacts, ne0: int, new: str):
    """:359-389 output.weight, or token_embd.weight of a tied-embedding model."""
    if o.output_tensor_type:
        return o.output_tensor_type, f"--output-tensor-type {o.output_tensor_type}"
    if f.arch == "falcon" or ne0 % 256:
        return "q8_0", f"output rule: ne0 {ne0} % 256 != 0 → q8_0"
    tied = "" if f.has_output else " (tied embeddings)"
    if o.ftype in OUT_Q5K:
        return ("q5_K" if f.has_output else "iq4_k"), f"{o.ftype} output rule{tied}"
    if o.ftype in ("IQ2_XXS_R4", "IQ2_XS_R4"):
        return ("q5_k_r4" if f.has_output else "iq4_k_r4"), f"{o.ftype} output rule{tied}"
    if o.ftype in OUT_IQ5K_TIED and not f.has_output:
        return "iq5_k", f"{o.ftype} output rule (tied embeddings)"
    if new not in OUT_KEEP:
        return "q6_K", f"output rule{tied}: q6_K"
    return new, f"output rule{tied}: {new} kept"


def embd_rule(o: Options, opt: str | None, what: str):
    """:390-435 token_embd.weight / per_layer_token_embd.weight of an untied model."""
    if opt:
        return opt, f"--{what}-type {opt}"
    ft = o.ftype
    if ft in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M", "IQ2_XXS_R4", "IQ2_XS_R4", "IQ1_S_R4",
              "IQ1_M_R4"):
        return "q2_K", f"{ft} {what} rule"
    if ft in ("IQ2_S", "IQ2_M", "IQ2_M_R4", "IQ3_XXS", "IQ3_KT"):
        return "iq3_s", f"{ft} {what} rule"
    if ft == "IQ3_XXS_R4":
        return "iq3_k", f"{ft} {what} rule"
    if ft in ("IQ1_BN", "IQ2_BN", "IQ2_BN_R4"):
        return "iq4_nl", f"{ft} {what} rule"
    return None


def trellis_r4_branch(c: Counters, o: Options, f: ModelFacts, name: str, layer_of):
    """:436-506 ftypes IQ1_S_R4/IQ1_M_R4 (r4=True) and IQ2_KT: their own small mixes."""
    r4 = o.ftype != "IQ2_KT"
    s = "_r4" if r4 else ""
    q = (lambda t: t + "_r4") if r4 else (lambda t: t)
    K = {"q2": "q2_k_r4" if r4 else "q2_K", "q4": "q4_k_r4" if r4 else "q4_K",
         "q5": "q5_k_r4" if r4 else "q5_K"}
    E, gqa, ft = f.n_expert, f.n_gqa, o.ftype
    if "attn_v.weight" in name:
        c.i_attention_wv += 1
        if E >= 4 or gqa >= 4:
            return q("iq4_k"), f"{ft} mix: attn_v (n_expert {E} or gqa {gqa} >= 4)"
        if gqa >= 2:
            return q("iq3_k"), f"{ft} mix: attn_v (gqa {gqa} >= 2)"
        return K["q2"], f"{ft} mix: attn_v"
    if E >= 8 and "attn_k" in name:
        return K["q4"], f"{ft} mix: attn_k* with n_expert {E} >= 8"
    if E >= 8 and any(p in name for p in ("blk.0.ffn_down", "blk.0.ffn_gate", "blk.0.ffn_up")):
        return q("iq3_k"), f"{ft} mix: layer-0 FFN with n_expert {E} >= 8"
    if E >= 8 and "attn_q" in name:
        return K["q4"], f"{ft} mix: attn_q* with n_expert {E} >= 8"
    if "attn_qkv.weight" in name:
        return ("iq2_k_r4" if r4 else "iq3_k"), f"{ft} mix: attn_qkv"
    if "_shexp.weight" in name:
        return q("iq4_k"), f"{ft} mix: shared expert"
    if "ffn_down" in name:
        il, nl = layer_of(c.i_ffn_down)
        c.i_ffn_down += 1
        if o.ffn_down_type:
            return o.ffn_down_type, f"--ffn-down-type {o.ffn_down_type}"
        if il < nl // 8:
            return (K["q2"] if r4 else "iq3_k"), f"{ft} mix: ffn_down of layer {il} < {nl}/8"
        return None
    if "attn_output.weight" in name:
        if E >= 4:
            return K["q5"], f"{ft} mix: attn_output with n_expert {E} >= 4"
        return ("iq2_k" + s if r4 else "iq3_k"), f"{ft} mix: attn_output"
    return None


def iq2_family_branch(c: Counters, o: Options, f: ModelFacts, name: str):
    """:507-541 IQ2_XXS/IQ2_XS/IQ1_S/IQ2_S/IQ2_M/IQ1_M/IQ2_KS(+R4): per-class options ignored,
    except --attn-output-type."""
    E, gqa, ft = f.n_expert, f.n_gqa, o.ftype
    iq2_m = ft in ("IQ2_M", "IQ2_M_R4")
    s_or_m = ft == "IQ2_S" or iq2_m
    if "attn_v.weight" in name:
        c.i_attention_wv += 1
        if gqa >= 4 or E >= 4:
            return "iq4_k", f"{ft} mix: attn_v (gqa {gqa} or n_expert {E} >= 4)"
        if gqa >= 2 or E >= 2:
            return "iq3_k", f"{ft} mix: attn_v (gqa {gqa} or n_expert {E} >= 2)"
        return ("iq3_s" if s_or_m else "q2_K"), f"{ft} mix: attn_v"
    if E >= 8 and "attn_k" in name:
        return "q4_K", f"{ft} mix: attn_k* with n_expert {E} >= 8"
    if E >= 8 and "attn_q" in name:
        return "q4_K", f"{ft} mix: attn_q* with n_expert {E} >= 8"
    if "attn_qkv.weight" in name:
        return ("iq3_xxs" if s_or_m else "iq2_k"), f"{ft} mix: attn_qkv"
    if "ffn_down" in name:
        i = c.i_ffn_down
        c.i_ffn_down += 1
        n = f.n_layer
        if i < n // 8:
            return ("iq3_s" if s_or_m else "q2_K"), \
                f"{ft} mix: ffn_down #{i} in file order < {n}/8 (counter, not layer)"
        return None
    if "attn_output.weight" in name:
        if o.attn_output_type:
            return o.attn_output_type, f"--attn-output-type {o.attn_output_type}"
        if E >= 4:
            return "q5_K", f"{ft} mix: attn_output with n_expert {E} >= 4"
        if ft in ("IQ1_S", "IQ1_M"):
            return "iq2_k", f"{ft} mix: attn_output"
        if s_or_m:
            return "iq3_s", f"{ft} mix: attn_output"
    return None
