"""The quantizers' one error class, a leaf so that kernels and api raise the same thing."""


class QuantError(ValueError):
    """Bad input for a quantizer or dequantizer (clear message, never a wrong result)."""
