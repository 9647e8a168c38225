"""Backend-neutral pieces that both backends' kernels use: the rules that say which calls an
algorithm serves, and index arithmetic shared by its CPU and CUDA versions."""
