"""k-quants: ggml-quants.c's 256-element super-block types q2_K ... q6_K."""
