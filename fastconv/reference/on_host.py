"""The NumPy reference serving CuPy arrays: ``algo="reference"`` on the CUDA backend copies the
arrays to the host, runs fastconv.reference, and copies the results back (running statistics
included). The oracle, on any backend; not fast."""
from __future__ import annotations

import types

from . import ENTRY_POINTS, FAMILIES

UPDATED_IN_PLACE = {("batch_norm", "forward"): (1, 2)}  # running_mean, running_var


def _on_host(family, name):
    fn = getattr(FAMILIES[family], name)

    def run(*args):
        import cupy

        host = [cupy.asnumpy(a) if isinstance(a, cupy.ndarray) else a for a in args]
        out = fn(*host)
        for i in UPDATED_IN_PLACE.get((family, name), ()):
            if args[i] is not None:
                args[i][...] = cupy.asarray(host[i])
        if isinstance(out, tuple):
            return tuple(None if o is None else cupy.asarray(o) for o in out)
        return cupy.asarray(out)

    run.__name__ = name
    run.__doc__ = f"fastconv.reference's {name}, run on host copies of CuPy arrays"
    return run


def kernels(family: str):
    """The family's entry points, each a host round trip through the reference."""
    return types.SimpleNamespace(**{name: _on_host(family, name)
                                    for name in ENTRY_POINTS[family]})
