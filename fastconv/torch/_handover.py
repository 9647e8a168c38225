"""Zero-copy hand-over between torch tensors and the arrays fastconv computes on.

CPU tensors become NumPy views of the same memory (``Tensor.numpy()``); CUDA tensors become
CuPy arrays over the same memory through DLPack, and fastconv's kernels are launched on
PyTorch's current stream of that device, so the work is ordered with the surrounding PyTorch
work without synchronising. Results come back without copying: ``torch.from_numpy`` wraps a
CPU result, and a CUDA result is a view of the PyTorch block it was computed in (below).

On the CUDA side, every buffer fastconv allocates while it serves PyTorch (outputs, workspace,
cuBLAS's temporaries) comes from PyTorch's caching allocator (:func:`torch_allocator`), not
from CuPy's memory pool. One pool, then: PyTorch's ``memory_allocated`` counts fastconv's
outputs, ``empty_cache`` and out-of-memory retries see every cached block, and a result's
block is allocated on the stream fastconv runs on and reused only after the work queued there.
A result comes back as a view of its block tensor (:func:`block_view`), not through DLPack,
whose tensor the caching allocator would not own: ``record_stream`` on it then works as for any
tensor (a result used on another stream, as DDP's NCCL stream does). Memory from CuPy's pool
could not be any of this: PyTorch could run out while CuPy held cached blocks, and a block
freed after use on another stream was reused by CuPy without waiting.

On the CPU, fastconv's kernels run on at most ``torch.get_num_threads()`` threads: the thread
budget the user gave PyTorch is the one the whole model gets.
"""
from __future__ import annotations

import contextlib
import functools
import weakref

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
    """A tensor over fastconv's result ``a`` (NumPy or CuPy), without copying. A CuPy result in
    memory from :func:`torch_allocator` comes back as a view of the allocator's own block
    tensor, so that PyTorch's caching allocator owns it (``record_stream`` then holds the block
    for another stream's work); other CuPy memory through DLPack."""
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a)
    view = block_view(a)
    return view if view is not None else torch.from_dlpack(a)


# torch_allocator's blocks by their address, for as long as CuPy memory holds them
_BLOCKS = weakref.WeakValueDictionary()


def block_view(a):
    """``a`` (a CuPy array, or anything with its data, shape, strides and dtype) as a view of
    the torch_allocator block holding it, or None where it is not in one (or lies in it in a
    way a tensor view cannot express: negative or unaligned strides, an unaligned start)."""
    block = _BLOCKS.get(a.data.mem.ptr)
    dtype = _TORCH_DTYPES.get(np.dtype(a.dtype))
    itemsize = np.dtype(a.dtype).itemsize
    offset = a.data.ptr - a.data.mem.ptr
    if block is None or dtype is None or offset % itemsize or \
            any(s < 0 or s % itemsize for s in a.strides):
        return None
    whole = block[:block.numel() // itemsize * itemsize].view(dtype)
    return whole.as_strided(tuple(a.shape), tuple(s // itemsize for s in a.strides),
                            offset // itemsize)


_TORCH_DTYPES = {np.dtype(k): v for k, v in (
    (np.float16, torch.float16), (np.float32, torch.float32), (np.float64, torch.float64),
    (np.int8, torch.int8), (np.uint8, torch.uint8), (np.int16, torch.int16),
    (np.int32, torch.int32), (np.int64, torch.int64), (np.bool_, torch.bool))}


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
    with cupy.cuda.Device(index), cupy.cuda.ExternalStream(stream.cuda_stream, index), \
            cupy.cuda.using_allocator(torch_allocator(index)):
        yield


@functools.lru_cache(maxsize=None)
def torch_allocator(index: int):
    """A CuPy allocator (``cupy.cuda.using_allocator``) for device ``index`` that takes its
    memory from PyTorch's caching allocator: each buffer is a uint8 tensor, allocated on
    PyTorch's current stream of the device, which the CuPy memory keeps alive and which goes
    back to PyTorch's pool when CuPy drops the memory."""
    import cupy

    device = torch.device("cuda", index)

    def allocate(size: int):
        block = torch.empty(size, dtype=torch.uint8, device=device)
        _BLOCKS[block.data_ptr()] = block
        return cupy.cuda.MemoryPointer(
            cupy.cuda.UnownedMemory(block.data_ptr(), size, block, device_id=index), 0)

    return allocate
