"""GGUF files <-> records: lazy memory-mapped reader, writer, imatrix files (L0: numpy only)."""
