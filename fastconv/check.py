"""``python -m fastconv check``: a self-test to run after installing.

For every available backend (the CPU always; CUDA when CuPy sees a GPU), every op and every
algorithm that can serve it, run small cases with non-trivial parameters in float32 and
float64 and compare with an oracle:

* every algorithm but the reference is compared with the NumPy reference;
* the reference itself is compared with PyTorch when torch is installed (and skipped, saying
  so, when it is not).

Oracles run in float64 on float64 copies of the inputs, so a float32 result is judged against
the exact answer. Arrays updated in place (batch norm's running statistics) are compared too.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from . import cuda, dispatch
from .testing import compare, fastconv_runner, reference_op, tolerance, torch_available, torch_op

DTYPES = (np.float32, np.float64)


def _forward_shape(op, shapes, kwargs):
    return dispatch.explain(op, *shapes, **kwargs)["output_shapes"][0]


def cases(seed=0):
    """Small float64 cases for every op: ``{op: [(args, kwargs), ...]}``.

    The first case of each op is a general one (grouped, strided, dilated, padded, non-square);
    convolutions add a depthwise case (groups == channels, channel multiplier 2) and a pointwise
    one (1x1, strided), so that every specialised algorithm has a case it can serve.
    """
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape)

    conv = {
        "conv2d": [((r(2, 4, 9, 8), r(6, 2, 3, 2), r(6)),
                    dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)),
                   ((r(2, 3, 7, 6), r(6, 1, 3, 3), r(6)), dict(stride=2, padding=1, groups=3)),
                   ((r(2, 4, 7, 6), r(6, 2, 1, 1), r(6)), dict(stride=(2, 1), groups=2))],
        "conv1d": [((r(2, 4, 11), r(6, 2, 3), r(6)),
                    dict(stride=1, padding="same", dilation=2, groups=2)),
                   ((r(2, 3, 10), r(6, 1, 5), r(6)), dict(stride=2, padding=2, groups=3)),
                   ((r(2, 4, 9), r(2, 4, 1), r(2)), dict(stride=3))],
        "conv_transpose2d": [((r(2, 4, 5, 6), r(4, 3, 3, 2), r(6)),
                              dict(stride=(2, 3), padding=1, output_padding=(1, 2), groups=2,
                                   dilation=(1, 2))),
                             ((r(2, 3, 4, 5), r(3, 1, 3, 3), r(3)),
                              dict(stride=2, padding=1, output_padding=1, groups=3)),
                             ((r(2, 4, 4, 3), r(4, 3, 1, 1), r(3)),
                              dict(stride=2, output_padding=1))],
    }
    out = dict(conv)
    for op, calls in conv.items():
        out[op + "_backward"] = [((r(*_forward_shape(op, (x.shape, w.shape), kw)), x, w), kw)
                                 for (x, w, _), kw in calls]
    x = r(2, 4, 9, 8)
    maxp = dict(kernel_size=3, stride=2, padding=1, dilation=(1, 2), ceil_mode=True)
    avgp = dict(kernel_size=(3, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    out["max_pool2d"] = [((x,), dict(maxp, return_indices=True))]
    out["avg_pool2d"] = [((x,), avgp)]
    out["adaptive_avg_pool2d"] = [((x,), dict(output_size=(4, 3)))]
    out["max_pool2d_backward"] = [((r(*_forward_shape("max_pool2d", (x.shape,), maxp)), x), maxp)]
    out["avg_pool2d_backward"] = [((r(*_forward_shape("avg_pool2d", (x.shape,), avgp)), x), avgp)]
    out["adaptive_avg_pool2d_backward"] = [((r(2, 4, 4, 3), x), {})]
    xb, stats = r(4, 3, 5, 5), (r(3), np.abs(r(3)) + 0.5)
    out["batch_norm"] = [((xb, *stats, r(3), r(3)), dict(training=True, momentum=0.2, eps=1e-3)),
                         ((xb, *stats, r(3), None), dict(training=False, eps=1e-3))]
    out["batch_norm_backward"] = [((r(*xb.shape), xb, r(3), *stats), dict(training=True, eps=1e-3)),
                                  ((r(*xb.shape), xb, None, *stats), dict(training=False))]
    return {op: out[op] for op in dispatch.OPS}


def serves(algo, op, args, kwargs, backend="cpu"):
    """Whether ``algo`` can serve this call of ``op``."""
    shapes = [None if a is None else a.shape for a in args]
    return algo in dispatch.explain(op, *shapes, backend=backend, **kwargs)["candidates"]


@dataclass
class Row:
    backend: str
    op: str
    algo: str
    oracle: str
    errors: dict  # dtype name -> error
    status: str
    note: str = ""


def check_one(backend, op, algo, calls, have_torch):
    """Run one algorithm on every case of ``op`` it can serve; the row reports the worst error."""
    if algo == "reference":
        if not have_torch:
            return Row(backend, op, algo, "torch", {}, "SKIP", "torch is not installed")
        oracle_name, oracle = "torch", torch_op
    else:
        oracle_name, oracle = "reference", reference_op
    served = [(args, kwargs) for args, kwargs in calls if serves(algo, op, args, kwargs, backend)]
    if not served:
        return Row(backend, op, algo, oracle_name, {}, "SKIP", "serves none of the check's cases")
    errors, status = {}, "PASS"
    for dt in DTYPES:
        try:
            found = [e for args, kwargs in served for _, e in
                     compare(op, args, kwargs, fastconv_runner(algo, backend), oracle, dt)]
        except Exception as exc:  # a self-test reports, it does not stop at the first failure
            return Row(backend, op, algo, oracle_name, errors, "FAIL",
                       f"{type(exc).__name__}: {exc}")
        errors[np.dtype(dt).name] = err = max(found)
        if not err <= tolerance(dt):
            status = "FAIL"
    return Row(backend, op, algo, oracle_name, errors, status, f"{len(served)} of {len(calls)} cases")


def run(backends=None, ops=None, seed=0):
    """Check every (backend, op, algorithm); returns the list of :class:`Row`."""
    backends = backends or (["cpu", "cuda"] if cuda.available() else ["cpu"])
    have_torch = torch_available()
    rows = []
    for op, calls in cases(seed).items():
        if ops and op not in ops:
            continue
        for backend in backends:
            for algo in dispatch.algorithms(op, backend):
                rows.append(check_one(backend, op, algo, calls, have_torch))
    return rows


def format_table(rows) -> str:
    lines = [f"{'backend':8} {'op':29} {'algo':12} {'oracle':10} {'float32':>9} {'float64':>9}  result"]
    for r in rows:
        errs = [f"{r.errors[d]:9.1e}" if d in r.errors else f"{'-':>9}" for d in ("float32", "float64")]
        lines.append(f"{r.backend:8} {r.op:29} {r.algo:12} {r.oracle:10} {errs[0]} {errs[1]}  "
                     f"{r.status}{'  (' + r.note + ')' if r.note else ''}")
    return "\n".join(lines)


def main(backends=None, ops=None, out=None) -> int:
    """Print the check's table to ``out`` (standard output as it is at the call); 1 if any
    algorithm failed."""
    from . import __version__

    out = sys.stdout if out is None else out

    rows = run(backends, ops)
    tol = ", ".join(f"{dt.name} {t:.0e}" for dt, t in ((np.dtype(d), tolerance(d)) for d in DTYPES))
    print(f"fastconv {__version__} self-check: each algorithm against its oracle on small cases "
          f"of every op\n(error = max |result - oracle| / max |oracle|; tolerance {tol})\n", file=out)
    print(format_table(rows), file=out)
    counts = {s: sum(r.status == s for r in rows) for s in ("PASS", "FAIL", "SKIP")}
    backends = sorted({r.backend for r in rows})
    print(f"\ncheck: {counts['PASS']} of {len(rows)} passed, {counts['FAIL']} failed, "
          f"{counts['SKIP']} skipped (backends: {', '.join(backends)})", file=out)
    return 1 if counts["FAIL"] else 0
