"""Backend-neutral code both backends use: the rules that say which calls an algorithm serves
(``depthwise``, ``pointwise``), the pointwise GEMMs' pixel selection written for NumPy and CuPy
alike, and batch norm's per-channel arithmetic (``batchnorm``)."""
