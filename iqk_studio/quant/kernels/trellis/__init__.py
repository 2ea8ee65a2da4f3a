"""Trellis types of ik_llama.cpp (iqk_quantize.cpp QuantizerIQKT): iq1_kt, iq2_kt, iq3_kt, iq4_kt.

Quantizers: per 32-block codebook search at a few trial scales, one row scale fitted over the
block scales, a final search at the stored scales and a least-squares row scale. Rows are
independent and deterministic (the codebook bins are fixed, no k-means), so prange over rows gives
the reference's bytes. One caveat: the reference reuses its block-scale buffer across the rows of
one call and IQ4_KT reads it back for a block where no trial scored > 0 (a degenerate block); we
start such a block from 0, where llama-quantize's result would depend on how its threads chunked
the rows. (IQ3_KT's reused code buffer is only read times 0.)

Dequantizers: a code c expands into a group of values: x = c + offset (offset 4096, or
4096 + 32768 for IQ4_KT blocks with the shift bit); per value x = 0xCBAC1FED·x mod 2^32,
s = x & 0x3f3f3f3f, value = (sum of the 4 bytes of s) − 126 (absolute value for IQ3_KT);
y = scale·value (codebook.code_values).
"""
