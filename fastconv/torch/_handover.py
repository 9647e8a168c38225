"""Zero-copy hand-over between torch tensors and the arrays fastconv computes on.

CPU tensors become NumPy views of the same memory (``Tensor.numpy()``); CUDA tensors become
CuPy arrays over the same memory through DLPack, and fastconv's kernels are launched on
PyTorch's current stream of that device, so the work is ordered with the surrounding PyTorch
work without synchronising. Results come back the same way: ``torch.from_numpy`` and
``torch.from_dlpack`` wrap fastconv's output buffers without copying.

On the CPU, fastconv's kernels run on at most ``torch.get_num_threads()`` threads: the thread
budget the user gave PyTorch is the one the whole model gets.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch


def device_of(*tensors) -> torch.device:
    """The device of the first tensor given; fastconv checks that the rest agree."""
    for t in tensors:
        if t is not None:
            if t.device.type not in ("cpu", "cuda"):
                raise TypeError(f"fastconv.torch: tensors on {t.device} are not supported; "
                                f"expected cpu or cuda tensors")
            return t.device
    raise ValueError("fastconv.torch: no tensor given")


def to_array(t):
    """A NumPy (CPU) or CuPy (CUDA) array over ``t``'s memory, or None."""
    if t is None:
        return None
    if t.is_cpu:
        return (t.detach() if t.requires_grad else t).numpy()
    t = t.detach()
    if t.device.type == "cuda":
        import cupy

        return cupy.from_dlpack(t)
    raise TypeError(f"fastconv.torch: tensors on {t.device} are not supported; expected cpu or "
                    f"cuda tensors")


def to_tensor(a) -> torch.Tensor:
    """A tensor over fastconv's result ``a`` (NumPy or CuPy), without copying."""
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    return torch.from_dlpack(a)


@contextlib.contextmanager
def on_device(device: torch.device):
    """Run fastconv's kernels as PyTorch would on ``device``: CPU kernels on at most
    ``torch.get_num_threads()`` threads, CUDA kernels (CuPy) on PyTorch's current stream."""
    if device.type != "cuda":
        from fastconv.cpu._threads import limited

        with limited(torch.get_num_threads()):
            yield
        return
    import cupy

    index = device.index if device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(index)
    with cupy.cuda.Device(index), cupy.cuda.ExternalStream(stream.cuda_stream, index):
        yield
