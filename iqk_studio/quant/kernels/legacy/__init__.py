"""Legacy family: ggml-quants.c's 32-element block types (q4_0 ... q8_0 and ik's q6_0), the
IQ4 non-linear types (iq4_nl, iq4_xs), mxfp4, and the few types we only dequantize."""
