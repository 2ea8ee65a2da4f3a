"""llama_tensor_get_type end to end and change_type_if_necessary (src/llama-quantize.cpp:222-303,
305-867); the interleave table (:83-120) is gguf/types.py's INTERLEAVED."""

from __future__ import annotations

from iqk_studio.gguf.types import INTERLEAVED
from iqk_studio.recipe import generic, mixes
from iqk_studio.recipe.mixes import Counters, Options
from iqk_studio.recipe.model import ModelFacts, TensorRef

_TO_IQ4_NL = ("iq2_xxs iq2_xxs_r4 iq2_xs iq2_xs_r4 iq2_ks iq2_s iq2_s_r4 iq3_xxs iq3_xxs_r4 iq3_s "
              "iq3_s_r4 iq1_s iq1_m q2_K q2_k_r4 q3_K q3_k_r4 iq2_k iq2_k_r4 iq2_kl iq3_ks iq3_k "
              "iq3_k_r4 iq4_kss iq4_ks iq4_ks_r4 iq4_xs_r8 iq1_kt iq2_kt iq3_kt iq4_kt iq4_xs")
# change_type_if_necessary: 256-block types checked for ne0 % 256 and their replacement
FALLBACK: dict[str, str] = {t: "iq4_nl" for t in _TO_IQ4_NL.split()}
FALLBACK.update({t: "q5_0" for t in ("iq4_k", "iq4_k_r4", "q4_k_r4", "iq5_ks", "iq5_ks_r4",
                                     "q4_K")})
FALLBACK.update({t: "q6_0" for t in ("iq5_k", "iq5_k_r4", "q5_k_r4", "q5_K")})
FALLBACK.update({t: "q8_0" for t in ("iq6_k", "q6_k_r4", "q8_k_r8", "q6_K")})
BITNET = ("iq1_bn", "iq2_bn", "iq2_bn_r4")  # need ne0 % 64; no fallback: llama-quantize throws

class QuantizeAbort(Exception):
    """A condition on which llama-quantize throws and stops the whole run."""


def change_type_if_necessary(t: str, ne0: int) -> str:
    if t in FALLBACK and ne0 % 256:
        return FALLBACK[t]
    if t in BITNET and ne0 % 64:
        raise QuantizeAbort(f"{t} needs ne0 % 64 == 0 (ne0 = {ne0}): 'Unsupported tensor size "
                            "encountered'")
    return t


def layer_info(f: ModelFacts, counter: int, name: str) -> tuple[int, int]:
    """For MoE models (n_expert > 1) the layer is parsed from the name, else the counter is used."""
    if max(1, f.n_expert) > 1:
        if not name.startswith("blk."):
            raise QuantizeAbort(f"Failed to determine layer for tensor {name}")
        digits = ""
        for ch in name[4:]:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            raise QuantizeAbort(f"Failed to determine layer for tensor {name}")
        il = int(digits)
        if il >= f.n_layer:
            raise QuantizeAbort(f"Bad layer {il} for tensor {name}. Must be in [0, {f.n_layer})")
        return il, f.n_layer
    return counter, f.n_layer


def _branch(c: Counters, o: Options, f: ModelFacts, t: TensorRef, new: str):
    name = t.name
    if name == "output.weight" or (not f.has_output and name == "token_embd.weight"):
        return mixes.output_rule(o, f, t.shape[0], new)
    if name == "token_embd.weight":
        return mixes.embd_rule(o, o.token_embedding_type, "token-embedding")
    if name == "per_layer_token_embd.weight":
        return mixes.embd_rule(o, o.per_layer_token_embedding_type, "per-layer-token-embedding")
    if o.ftype in ("IQ1_S_R4", "IQ1_M_R4", "IQ2_KT"):
        return mixes.trellis_r4_branch(c, o, f, name, lambda i: layer_info(f, i, name))
    if o.ftype in mixes.IQ2_FAMILY:
        return mixes.iq2_family_branch(c, o, f, name)
    if "attn_v.weight" in name:
        return generic.attn_v(c, o, f, new)
    if "attn_k" in name:
        return generic.attn_k(o, f)
    if "attn_q" in name:  # also attn_qkv: --attn-qkv-type never applies
        return generic.attn_q(o, f)
    if "ffn_down" in name:
        il, nl = layer_info(f, c.i_ffn_down, name)
        c.i_ffn_down += 1
        return generic.ffn_down(o, f, il, nl)
    if "attn_output.weight" in name:
        return generic.attn_output(o, f)
    if "ffn_gate" in name:
        il, nl = layer_info(f, c.i_ffn_gate, name)
        c.i_ffn_gate += 1
        return generic.ffn_gate_up(o, o.ffn_gate_type, "ffn-gate", il, nl)
    if "ffn_up" in name:
        il, nl = layer_info(f, c.i_ffn_up, name)
        c.i_ffn_up += 1
        return generic.ffn_gate_up(o, o.ffn_up_type, "ffn-up", il, nl)
    return None


def get_type(c: Counters, o: Options, f: ModelFacts, t: TensorRef, custom_type: str | None,
             custom_why: str) -> tuple[str, list[str], str | None]:
    """(type, reasons, fallback_from) for a candidate tensor; custom_type: first matching rule."""
    new = o.default_type
    hit = _branch(c, o, f, t, new)
    reasons = [hit[1] + f" → {hit[0]}"] if hit else [f"default of {o.ftype} → {new}"]
    if hit:
        new = hit[0]
    if custom_type is not None:
        new = custom_type
        reasons = [custom_why]
    fallback_from = None
    working = change_type_if_necessary(new, t.shape[0])
    if working != new:
        reasons.append(f"fallback: {new} needs ne0 % 256 == 0 (ne0 = {t.shape[0]}) → {working}")
        fallback_from, new = new, working
    if t.name in ("token_embd.weight", "per_layer_token_embd.weight") and new in INTERLEAVED:
        base = INTERLEAVED[new][0]
        reasons.append(f"embeddings cannot be row-interleaved: {new} → {base}")
        new = base
    return new, reasons, fallback_from
