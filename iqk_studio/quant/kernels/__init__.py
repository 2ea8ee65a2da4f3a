"""Numba kernels by family (floats.py, legacy/, kquants/, iqgrid/, iqk/, trellis/, repacked/), a
type's quantizer and dequantizer in one module; quant/registry.py's KERNELS says which module.

Each module exports QUANT and DEQUANT dicts, made by kernels/wrap.py:
QUANT[name](x, qw, mode) -> uint8 (rows, row_bytes): x float32 (rows, n) C-contiguous,
qw float32 (n,) importance or None, mode one of MODE_DEFAULT / MODE_IMATRIX / MODE_UNIFORM.
DEQUANT[name](raw, n) -> float32 (rows, n): raw uint8 (rows, row_bytes) C-contiguous.
Names are ggml type names as llama-quantize spells them.
"""

MODE_DEFAULT = 0  # no imatrix: the reference's own default weights (x², σ²+x², ...)
MODE_IMATRIX = 1  # qw given: the reference's imatrix weighting
MODE_UNIFORM = 2  # w = 1 everywhere (not in ik_llama.cpp; for QAT checks)
