"""Quant types, value grids and numba kernels (L1: numpy + numba only)."""
