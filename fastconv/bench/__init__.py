"""The benchmark: ``python -m fastconv bench`` times the layer zoo (:mod:`.zoo`) with the
chosen algorithms, next to PyTorch's kernels with ``--vs torch``; ``bench --models`` times
whole networks (:mod:`.models`) converted to fastconv against plain PyTorch; ``bench
--overhead`` times tiny calls of every op (:mod:`.overhead`), where the call path is the cost.

Modules: :mod:`.zoo` (the layers), :mod:`.models` (the networks), :mod:`.timing` (how a call is
timed; the machine's description, peak and bandwidth), :mod:`.baseline` (PyTorch's equivalent
of each call), :mod:`.suite` and :mod:`.model_suite` (what runs, and one row per measurement),
:mod:`.report` (tables, JSON, plots). Nothing here is imported by ``import fastconv``.
"""
from __future__ import annotations

import os
import sys
import time

from .model_suite import ModelOptions
from .suite import Options


def main(o: Options, json_path=None, plot_path=None, argv=None, out=None) -> int:
    """Run the benchmark described by ``o``; print the table; write the files asked for."""
    from . import report, suite

    out = out or sys.stdout
    try:
        layers = suite.check_options(o)
        _check_paths(json_path, plot_path)
        device = suite.device_for(o)
    except (ValueError, RuntimeError) as e:
        print(f"fastconv bench: error: {e}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    plans = suite.plan(o, layers)
    skipped = [f"{pl.layer.name} {suite.DIRECTION_LABELS[pl.direction]}: {algo} cannot serve "
               f"it ({why})" for pl in plans for algo, why in pl.skipped.items()]
    if not any(pl.algos for pl in plans):
        print(f"fastconv bench: error: algorithm {o.algo!r} can serve none of the selected "
              f"calls", file=sys.stderr)
        return 2
    print("measuring the machine's peak and bandwidth...", file=sys.stderr, flush=True)
    roofs = suite.measure_machine(device, o.dtype)
    meta = suite.metadata(o, device, roofs, argv)
    table = report.Table(vs_torch=o.vs_torch, mark_auto=o.algo != "auto")
    progress = report.Progress(sum(bool(pl.algos) for pl in plans))
    rows = _table(report.header(meta), table, suite.run(o, plans, device, roofs, progress),
                  progress, out)
    summary = {**suite.summarise(rows), **suite.startup(o.backend)}
    print(report.footer(meta, summary, skipped, time.perf_counter() - started), file=out)
    _write(json_path, plot_path, report.plot, meta, rows, summary, out)
    return 0


def _table(header, table, measured, progress, out):
    """Print the header and one table line per row as the rows come; the rows."""
    print(header, file=out)
    print(file=out)
    print(table.head(), file=out)
    print(table.rule(), file=out, flush=True)
    rows = []
    for row in measured:
        rows.append(row)
        progress.clear()
        print(table.format(row), file=out, flush=True)
    progress.clear()
    print(table.rule(), file=out)
    return rows


def _write(json_path, plot_path, plot, meta, rows, summary, out):
    """The JSON and the plot, where asked for."""
    from . import report

    if json_path:
        report.write_json(json_path, meta, rows, summary)
        print(f"wrote {json_path}", file=out)
    if plot_path:
        plot(plot_path, meta, rows)
        print(f"wrote {plot_path}", file=out)


def main_models(o: ModelOptions, json_path=None, plot_path=None, argv=None, out=None) -> int:
    """Time the model zoo (``bench --models``); print the table (and profiles); write the files
    asked for."""
    from . import model_suite, report

    out = out or sys.stdout
    selected, failed = _with_torch("--models", lambda: model_suite.check_options(o), json_path,
                                   plot_path)
    if failed:
        return 2
    started = time.perf_counter()
    meta = model_suite.metadata(o, argv)
    table = report.ModelTable()
    progress = report.Progress(len(selected) * len(o.modes))
    rows = _table(report.model_header(meta), table, model_suite.run(o, selected, progress),
                  progress, out)
    summary = model_suite.summarise(rows)
    print(report.model_footer(summary, time.perf_counter() - started, len(rows)), file=out)
    for row in rows:
        if "profile" in row:
            print(file=out)
            print(report.profile_text(row), file=out)
    _write(json_path, plot_path, report.model_plot, meta, rows, summary, out)
    return 0


def main_overhead(o, json_path=None, argv=None, out=None) -> int:
    """Time tiny calls of every op (``bench --overhead``); print the table; write the JSON."""
    from . import overhead, report

    out = out or sys.stdout
    _, failed = _with_torch("--overhead", lambda: overhead.check_options(o), json_path, None)
    if failed:
        return 2
    started = time.perf_counter()
    meta = overhead.metadata(o, argv)
    table = overhead.Table()
    progress = report.Progress(len(overhead.TINY) * (len(o.ways) + ("numpy" in o.ways)))
    rows = _table(overhead.header(meta), table, overhead.run(o, progress), progress, out)
    summary = overhead.summarise(rows)
    print(overhead.footer(summary, time.perf_counter() - started), file=out)
    _write(json_path, None, None, meta, rows, summary, out)
    return 0


def _with_torch(flag, check, json_path, plot_path):
    """``(check(), False)`` once the options, the output paths and PyTorch (which ``flag``
    needs) are all there; else ``(None, True)``, with the error printed."""
    try:
        result = check()
        _check_paths(json_path, plot_path)
        import torch  # noqa: F401
    except ImportError:
        print(f"fastconv bench: error: {flag} needs PyTorch: pip install torch==2.13.0",
              file=sys.stderr)
        return None, True
    except ValueError as e:
        print(f"fastconv bench: error: {e}", file=sys.stderr)
        return None, True
    return result, False


def _check_paths(json_path, plot_path):
    """ValueError naming an output file that cannot be written, or --plot without matplotlib."""
    for path, what in ((json_path, "--json"), (plot_path, "--plot")):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            raise ValueError(f"{what}: folder {folder!r} does not exist")
    if plot_path:
        try:
            import matplotlib  # noqa: F401
        except ImportError as e:
            raise ValueError("--plot needs matplotlib: pip install matplotlib") from e


__all__ = ["ModelOptions", "Options", "main", "main_models", "main_overhead"]
