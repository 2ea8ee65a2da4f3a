"""Interleaved (_R4/_R8/_R16, q4_0_4x4 ...) types: dequantize by undoing the interleaving to the
base layout and calling the base dequantizer; quantize with the base quantizer, then interleave.

An interleaved group of R rows is: R row-meta fields (one per row, when the base has row meta),
then big block b = block b of each of the R rows, mixed. For each type, the forward interleaver
of one big block (forward.py / forward_iq.py, transcribed from ik_llama.cpp's repack_*) is probed
with ~100 binary-coded vectors; it is an (affine) bit permutation (layout.py), applied either way
as a byte gather when whole bytes move, else as a numba loop of byte ops. via_base.py holds these
types' quantizers and dequantizers. IQ1_S_R4 / IQ1_M_R4 / Q8_K_R8 / Q8_K_R16 / Q8_KV_R8 /
BF16_R16 are their own formats (no exact base) and are dequantized directly (own_layout.py).
"""
