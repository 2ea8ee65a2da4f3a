"""Synthetic models and recipes whose `llama-quantize --dry-run` logs (tests/data/plans, made by
tests/data/plans/make_logs.py) are the oracle of test_recipe_rules.py: branches of
llama_tensor_get_type that the logs of real models in ../shared/refs/plans do not reach."""

from __future__ import annotations

from dataclasses import dataclass

from iqk_studio.gguf.skeleton import deepseek_v3
from iqk_studio.recipe import Recipe, Rule


def llama(n_layer=32, n_head=32, n_head_kv=8, n_vocab=128256, n_embd=4096, n_ff=14336,
          tied=False, arch="llama", w="f16", n_expert=0):
    """[(name, ggml shape, type)], metadata of a llama-style model (optionally MoE)."""
    t = [("token_embd.weight", (n_embd, n_vocab), w)]
    hd = n_embd // n_head
    for i in range(n_layer):
        b = f"blk.{i}."
        t += [(b + "attn_norm.weight", (n_embd,), "f32"),
              (b + "attn_q.weight", (n_embd, n_embd), w),
              (b + "attn_k.weight", (n_embd, n_head_kv * hd), w),
              (b + "attn_v.weight", (n_embd, n_head_kv * hd), w),
              (b + "attn_output.weight", (n_embd, n_embd), w),
              (b + "ffn_norm.weight", (n_embd,), "f32")]
        if n_expert:
            t += [(b + "ffn_gate_inp.weight", (n_embd, n_expert), "f32"),
                  (b + "ffn_gate_exps.weight", (n_embd, n_ff, n_expert), w),
                  (b + "ffn_up_exps.weight", (n_embd, n_ff, n_expert), w),
                  (b + "ffn_down_exps.weight", (n_ff, n_embd, n_expert), w)]
        else:
            t += [(b + "ffn_gate.weight", (n_embd, n_ff), w),
                  (b + "ffn_up.weight", (n_embd, n_ff), w),
                  (b + "ffn_down.weight", (n_ff, n_embd), w)]
    t += [("output_norm.weight", (n_embd,), "f32")]
    if not tied:
        t += [("output.weight", (n_embd, n_vocab), w)]
    # every hparam llama-quantize's llm_load_hparams requires, so its dry run sees the whole model
    md = {"general.architecture": arch, f"{arch}.block_count": n_layer,
          f"{arch}.context_length": 4096, f"{arch}.embedding_length": n_embd,
          f"{arch}.feed_forward_length": n_ff, f"{arch}.attention.head_count": n_head,
          f"{arch}.attention.head_count_kv": n_head_kv, f"{arch}.vocab_size": n_vocab}
    if arch == "falcon":
        md[f"{arch}.attention.layer_norm_epsilon"] = 1e-5
    else:
        md[f"{arch}.attention.layer_norm_rms_epsilon"] = 1e-6
    if n_expert:
        md[f"{arch}.expert_count"] = n_expert
        md[f"{arch}.expert_used_count"] = 2
    return t, md


def non_candidates():
    t = [("a.bias", (64, 64), "f32"), ("ids.weight", (64, 64), "i32"), ("v.weight", (64,), "f32"),
         ("blk.0.ssm_conv1d.weight", (4, 64), "f32"), ("output.weight", (256, 10), "f32")]
    _, md = llama(n_layer=1, n_embd=64, n_head=1, n_head_kv=1, n_ff=64, n_vocab=10)
    return t, md


def moe_with_mtp():
    t, md = llama(n_layer=2, n_expert=4, n_ff=256)
    return t + [("mtp.ffn_down_exps.weight", (256, 4096, 4), "f16")], md


def deepseek_mini(n_layer=40, n_dense=3, n_embd=256, n_head=4, n_vocab=1024, n_ff=512,
                  n_expert=8, n_ff_exp=256):
    """gguf.skeleton.deepseek_v3's tensors and hparams at a size llama-quantize checks quickly:
    MLA attention, dense leading layers, routed experts plus a shared expert (`_shexp`)."""
    t, md, _ = deepseek_v3()
    q_lora, kv_lora, nope, rope, v_dim = 256, 256, 128, 64, 128
    shapes = {
        "token_embd.weight": (n_embd, n_vocab), "output.weight": (n_embd, n_vocab),
        "output_norm.weight": (n_embd,), "attn_kv_a_mqa.weight": (n_embd, kv_lora + rope),
        "attn_kv_a_norm.weight": (kv_lora,), "attn_kv_b.weight": (kv_lora, n_head * (nope + v_dim)),
        "attn_k_b.weight": (nope, kv_lora, n_head), "attn_v_b.weight": (kv_lora, v_dim, n_head),
        "attn_norm.weight": (n_embd,), "attn_output.weight": (n_head * v_dim, n_embd),
        "attn_q_a.weight": (n_embd, q_lora), "attn_q_a_norm.weight": (q_lora,),
        "attn_q_b.weight": (q_lora, n_head * (nope + rope)), "ffn_down.weight": (n_ff, n_embd),
        "ffn_gate.weight": (n_embd, n_ff), "ffn_up.weight": (n_embd, n_ff),
        "ffn_norm.weight": (n_embd,), "exp_probs_b.bias": (n_expert,),
        "ffn_down_exps.weight": (n_ff_exp, n_embd, n_expert),
        "ffn_down_shexp.weight": (n_ff_exp, n_embd),
        "ffn_gate_exps.weight": (n_embd, n_ff_exp, n_expert),
        "ffn_gate_inp.weight": (n_embd, n_expert), "ffn_gate_shexp.weight": (n_embd, n_ff_exp),
        "ffn_up_exps.weight": (n_embd, n_ff_exp, n_expert),
        "ffn_up_shexp.weight": (n_embd, n_ff_exp),
    }
    out = []
    for name, _, typ in t:
        parts = name.split(".")
        if parts[0] == "blk" and int(parts[1]) >= n_layer:
            continue
        out.append((name, shapes[".".join(parts[2:]) if parts[0] == "blk" else name], typ))
    a = "deepseek2."
    md = {k: v for k, v in md.items() if not k.startswith("tokenizer.")}
    md.update({a + "block_count": n_layer, a + "embedding_length": n_embd,
               a + "feed_forward_length": n_ff, a + "attention.head_count": n_head,
               a + "attention.head_count_kv": n_head, a + "vocab_size": n_vocab,
               a + "attention.q_lora_rank": q_lora, a + "attention.kv_lora_rank": kv_lora,
               a + "expert_feed_forward_length": n_ff_exp, a + "expert_count": n_expert,
               a + "expert_used_count": 2})
    return out, md


MODELS = {
    "llama8b": lambda: llama(),
    "llama70b": lambda: llama(n_layer=80, n_head=64, n_head_kv=8, n_embd=8192, n_ff=28672),
    "llama65b": lambda: llama(n_layer=80, n_head=64, n_head_kv=64, n_embd=8192, n_ff=22016),
    "llama7b-32k": lambda: llama(n_vocab=32000),
    "qwen3-8b": lambda: llama(n_layer=36, arch="qwen3", n_vocab=151936, n_embd=4096),
    "qwen3-4b": lambda: llama(n_layer=36, arch="qwen3", n_vocab=151936, n_embd=2560, n_head=32,
                              n_ff=9728),
    "tied4": lambda: llama(n_layer=4, tied=True),
    "deepseek-mini": deepseek_mini,
    "moe8": lambda: llama(n_layer=8, n_expert=8, n_ff=512),
    "llama2": lambda: llama(n_layer=2),
    "moe4": lambda: llama(n_layer=2, n_expert=4, n_ff=256),
    "rows1001": lambda: llama(n_layer=1, n_embd=512, n_head=4, n_head_kv=1, n_ff=1024,
                              n_vocab=1001),
    "noncand": non_candidates,
    "falcon1": lambda: llama(n_layer=1, arch="falcon", n_embd=512, n_head=4, n_head_kv=1,
                             n_ff=1024),
    "llama1-640": lambda: llama(n_layer=1, n_embd=640, n_head=4, n_head_kv=1, n_ff=1024),
    "llama16": lambda: llama(n_layer=16),
    "moe4-mtp": moe_with_mtp,
    "llama1-96": lambda: llama(n_layer=1, n_embd=96, n_head=3, n_head_kv=3, n_ff=128),
}


@dataclass(frozen=True)
class Case:
    model: str  # key of MODELS
    options: tuple[str, ...]  # llama-quantize options before MODEL OUT FTYPE
    ftype: str
    recipe: Recipe  # the same command as a Recipe
    why: str  # the branch of llama_tensor_get_type it reaches


def _r(base, **kw):
    return Recipe(base, **kw)


IMATRIX = "imatrix.dat"  # made by make_logs.py: an entry for every weight of the model
CASES = {
    "llama8b_Q4_K_M": Case("llama8b", (), "Q4_K_M", _r("Q4_K_M"),
                           "use_more_bits layers; attn_v gqa bump; output q6_K"),
    "llama70b_Q4_K_M": Case("llama70b", (), "Q4_K_M", _r("Q4_K_M"),
                            "70B attn_v rule preempts the mix"),
    "llama70b_IQ4_KS": Case("llama70b", (), "IQ4_KS", _r("IQ4_KS"), "70B attn_v, no gqa bump"),
    "llama70b_IQ3_K": Case("llama70b", (), "IQ3_K", _r("IQ3_K"), "70B attn_v for IQ3_K"),
    "llama65b_IQ4_KS": Case("llama65b", (), "IQ4_KS", _r("IQ4_KS"), "dense 65B: gqa 1"),
    "llama8b_IQ5_K": Case("llama8b", (), "IQ5_K", _r("IQ5_K"), "big vocab bump"),
    "llama7b-32k_IQ5_K": Case("llama7b-32k", (), "IQ5_K", _r("IQ5_K"), "no big-vocab bump"),
    "qwen3-8b_IQ5_KS": Case("qwen3-8b", (), "IQ5_KS", _r("IQ5_KS"), "qwen3 model type"),
    "qwen3-4b_IQ5_KS": Case("qwen3-4b", (), "IQ5_KS", _r("IQ5_KS"), "qwen3 model type"),
    "tied4_IQ4_KS": Case("tied4", (), "IQ4_KS", _r("IQ4_KS"), "tied embeddings: output rule"),
    "tied4_IQ2_K": Case("tied4", (), "IQ2_K", _r("IQ2_K"), "tied embeddings: output rule"),
    "tied4_IQ4_KS_custom": Case(
        "tied4", ("--custom-q", "token_embd=q8_0", "--output-tensor-type", "q6_K"), "IQ4_KS",
        _r("IQ4_KS", rules=(Rule("token_embd", "q8_0"),), output_tensor_type="q6_K"),
        "a custom rule beats --output-tensor-type on tied embeddings"),
    "tied4_IQ4_KS_embd": Case(
        "tied4", ("--custom-q", "token_embd=q8_0", "--output-tensor-type", "q6_K",
                  "--token-embedding-type", "q4_K"), "IQ4_KS",
        _r("IQ4_KS", rules=(Rule("token_embd", "q8_0"),), output_tensor_type="q6_K",
           token_embedding_type="q4_K"), "the post-override wins"),
    "deepseek-mini_IQ2_KS": Case("deepseek-mini", (), "IQ2_KS", _r("IQ2_KS"),
                                 "ffn_down counter counts shexp too"),
    "moe8_IQ2_KS_roles": Case(
        "moe8", ("--attn-v-type", "q8_0", "--attn-output-type", "q6_K"), "IQ2_KS",
        _r("IQ2_KS", attn_v_type="q8_0", attn_output_type="q6_K"),
        "IQ2_KS ignores role options but not attn_output"),
    "moe8_IQ4_K": Case("moe8", (), "IQ4_K", _r("IQ4_K"), "MoE defaults"),
    "moe8_IQ4_K_roles": Case(
        "moe8", ("--attn-k-type", "iq6_k", "--ffn-up-type", "iq3_k"), "IQ4_K",
        _r("IQ4_K", attn_k_type="iq6_k", ffn_up_type="iq3_k"), "generic role options"),
    "llama2_Q4_K_M_pure": Case(
        "llama2", ("--pure", "--custom-q", "attn_q=q8_0", "--token-embedding-type", "q8_0"),
        "Q4_K_M", _r("Q4_K_M", rules=(Rule("attn_q", "q8_0"),), pure=True,
                     token_embedding_type="q8_0"), "--pure ignores rules, not post-overrides"),
    "llama2_F16_custom": Case("llama2", ("--custom-q", "attn_q=q8_0"), "F16",
                              _r("F16", rules=(Rule("attn_q", "q8_0"),)),
                              "a float base ignores rules"),
    "moe4_Q8_0": Case("moe4", (), "Q8_0", _r("Q8_0"), "the router stays f32"),
    "moe4_Q8_0_router": Case("moe4", ("--ffn-gate-inp-type", "q8_0"), "Q8_0",
                             _r("Q8_0", ffn_gate_inp_type="q8_0"), "--ffn-gate-inp-type"),
    "rows1001_Q8_0_interleaved": Case(
        "rows1001", ("--custom-q", "token_embd=iq4_k_r4,output=q4_k_r4,attn_k=q8_k_r8,"
                     "ffn_up=q4_k_r4"), "Q8_0",
        _r("Q8_0", rules=(Rule("token_embd", "iq4_k_r4"), Rule("output", "q4_k_r4"),
                          Rule("attn_k", "q8_k_r8"), Rule("ffn_up", "q4_k_r4"))),
        "interleaved row-count fallback; embeddings never interleaved"),
    "noncand_Q8_0_leave": Case("noncand", ("--leave-output-tensor",), "Q8_0",
                               _r("Q8_0", leave_output_tensor=True),
                               "non-candidates and --leave-output-tensor"),
    "falcon1_Q4_K_M": Case("falcon1", (), "Q4_K_M", _r("Q4_K_M"), "falcon output q8_0"),
    "llama1-640_Q4_K_M": Case("llama1-640", (), "Q4_K_M", _r("Q4_K_M"),
                              "output of 640 columns: q8_0"),
    "llama16_IQ4_KS": Case("llama16", (), "IQ4_KS", _r("IQ4_KS"), "first-eighth ffn_down bump"),
    "llama16_IQ4_XS": Case("llama16", (), "IQ4_XS", _r("IQ4_XS"), "first-eighth ffn_down bump"),
    "llama16_Q4_K_S": Case("llama16", (), "Q4_K_S", _r("Q4_K_S"), "first-eighth ffn_down bump"),
    "llama16_IQ4_KS_imatrix": Case("llama16", ("--imatrix", IMATRIX), "IQ4_KS",
                                   _r("IQ4_KS", imatrix=IMATRIX), "no bump with an imatrix"),
    "llama16_IQ4_XS_imatrix": Case("llama16", ("--imatrix", IMATRIX), "IQ4_XS",
                                   _r("IQ4_XS", imatrix=IMATRIX), "no bump with an imatrix"),
    "moe4-mtp_Q4_K_M": Case("moe4-mtp", (), "Q4_K_M", _r("Q4_K_M"),
                            "abort: Failed to determine layer"),
    "llama1-96_IQ2_BN": Case("llama1-96", (), "IQ2_BN", _r("IQ2_BN"),
                             "abort: Unsupported tensor size"),
}
