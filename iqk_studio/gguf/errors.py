"""The GGUF layer's error class, a leaf imported by the reader, the split-file checks and the
imatrix reader."""


class GGUFError(ValueError):
    """A file that is not a readable GGUF; the message names the file, the offset and the fault."""
