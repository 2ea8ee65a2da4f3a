"""IQ grid types of ggml-quants.c: iq1_s, iq1_m, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, each module
holding a type's quantizer and dequantizer (iq3_xxs.py also iq3_s; iq2_xs.py the dequant kernel
iq2_s shares).

Their quantizers search a block scale and, per group of 4 or 8 values, the nearest point of a
fixed grid. ggml has two generations of that search, and so do we:
- lattice.py: iq3_xxs, iq3_s, iq2_s (quantize_row_iq3_xxs/iq3_s/iq2_s_impl): labels on the odd
  lattice 2l+1, a kmap over packed labels whose misses point into neighbour lists
  (tables.lattice_tables); they run with or without an imatrix.
- neighbours.py: iq2_xxs, iq2_xs, iq1_s, iq1_m (quantize_row_iq2_xxs/iq2_xs/iq1_s/iq1_m_impl): the
  imatrix-only types, codes q = qa·code + qb, kmap + neighbour lists as iq2xs_init_impl builds
  them (tables.neighbour_tables); a row status reports where llama-quantize would abort.
tables.py derives both kinds of search tables from the grids (taken from gguf-py).
"""
