"""Evaluation engine: tokenizer and a small CPU transformer forward pass (numpy + numba)."""
