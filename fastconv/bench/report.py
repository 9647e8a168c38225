"""What the benchmark shows: the table (printed as it grows), the summary, the JSON file, the
plot, and a progress bar on the terminal."""
from __future__ import annotations

import json
import shutil
import sys

from .suite import DIRECTION_LABELS, per_call


def header(meta: dict) -> str:
    lines = [f"fastconv {meta['fastconv']} bench: suite {meta['suite']}, backend "
             f"{meta['backend']}, {meta['dtype']}, batch {meta['batch']}, algo {meta['algo']}, "
             f"{meta['threads']} threads",
             f"machine: {meta['machine_line']}",
             f"peak {meta['peak_flops'] / 1e9:.1f} GFLOP/s ({meta['peak_how']}); bandwidth "
             f"{meta['bandwidth'] / 1e9:.1f} GB/s ({meta['bandwidth_how']})"]
    if "torch" in meta:
        extra = f", cuDNN {meta['cudnn']}" if "cudnn" in meta else ""
        lines.append(f"baseline: PyTorch {meta['torch']} ({meta['torch_threads']} threads{extra})")
    who = "of fastconv and PyTorch " if "torch" in meta else ""
    lines.append(f"timing: a warm-up call each, then {meta['rounds']} rounds of blocks {who}"
                 f"(one contender at a time, each after {meta['idle_gap_s']:g} s idle), at "
                 f"least {meta['min_repeat']} runs and {meta['min_time_s']:g} s per call in "
                 f"all; median ms, interquartile spread")
    return "\n".join(lines)


class Columns:
    """A fixed-width text table: ``columns`` are (name, width, alignment) triples; subclasses
    say how a row becomes cells (``format``)."""

    columns: tuple = ()

    def _line(self, cells) -> str:
        return " ".join(f"{c:{align}{width}}" for c, (_, width, align) in zip(cells, self.columns))

    def head(self) -> str:
        return self._line([name for name, _, _ in self.columns]).rstrip()

    def rule(self) -> str:
        return "-" * len(self.head())


class Table(Columns):
    """Rows printed one by one; the layer and direction are printed when they change."""

    COLUMNS = (("layer", 29, "<"), ("direction", 10, "<"), ("algo", 11, "<"), ("ms", 9, ">"),
               ("±", 5, ">"), ("GFLOP/s", 8, ">"), ("%peak", 6, ">"), ("GB/s", 7, ">"),
               ("%bw", 5, ">"))
    TORCH = (("torch ms", 9, ">"), ("ratio", 6, ">"))

    def __init__(self, vs_torch: bool, mark_auto: bool, out=sys.stdout):
        self.columns = self.COLUMNS + (self.TORCH if vs_torch else ())
        self.mark_auto = mark_auto
        self.out = out
        self.last = (None, None)

    def format(self, row: dict) -> str:
        layer, direction = row["layer"], DIRECTION_LABELS[row["direction"]]
        shown_layer = layer if layer != self.last[0] else ""
        shown_direction = direction if (layer, direction) != self.last else ""
        self.last = (layer, direction)
        algo = row["algo"] + ("*" if self.mark_auto and row["auto"] else "")
        t = row["time"]
        cells = [shown_layer, shown_direction, algo, f"{t['median_ms']:.3f}",
                 f"{t['spread']:.0%}", f"{row['gflops']:.1f}", f"{row['pct_peak']:.0f}%",
                 f"{row['gbytes_per_s']:.1f}", f"{row['pct_bandwidth']:.0f}%"]
        if len(self.columns) > len(self.COLUMNS):
            torch = row["torch"]
            cells += ["", ""] if torch is None else [f"{torch['median_ms']:.3f}",
                                                     f"{row['ratio']:.2f}"]
        return self._line(cells).rstrip()


def footer(meta: dict, summary: dict, skipped: list[str], wall_s: float) -> str:
    lines = []
    if "geomean_ratio" in summary:
        which = "auto's choice" if meta["algo"] in ("auto", "all") else meta["algo"]
        lines.append(f"fastconv/PyTorch median-time ratio over {summary['compared']} calls "
                     f"({which}; lower is better): geometric mean "
                     f"{summary['geomean_ratio']:.2f}, worst {summary['worst_ratio']:.2f}; "
                     f"faster than PyTorch in {summary['faster_than_torch']} of "
                     f"{summary['compared']}")
    if meta["algo"] != "auto":
        lines.append("* marks the algorithm auto picks")
    warm = f"warm-up calls (not in the table): fastconv {summary['fastconv_warmup_s']:.1f} s"
    warm += " (JIT compilation, or loading it from Numba's on-disk cache, included)"
    if "torch" in meta:
        warm += f", PyTorch {summary['torch_warmup_s']:.1f} s"
    lines.append(warm)
    if "import_s" in summary:
        lines.append(f"fresh process: import fastconv {summary['import_s']:.2f} s, first conv2d "
                     f"{summary['first_conv2d_s']:.2f} s (warm on-disk JIT cache)")
    lines.extend(f"skipped {s}" for s in skipped)
    lines.append(f"{summary['rows']} rows in {wall_s:.0f} s")
    return "\n".join(lines)


def write_json(path: str, meta: dict, rows: list[dict], summary: dict) -> None:
    with open(path, "w") as f:
        json.dump({"meta": meta, "summary": summary, "rows": rows}, f, indent=1)
        f.write("\n")


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.enabled = total > 0 and hasattr(stream, "isatty") and stream.isatty()
        self.shown = False

    def __call__(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = shutil.get_terminal_size((80, 20)).columns
        bar = int(20 * (self.done - 1) / self.total)
        text = f"[{'#' * bar}{'.' * (20 - bar)}] {self.done}/{self.total} {label}"
        self.stream.write("\r" + text[:width - 1].ljust(width - 1))
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.enabled and self.shown:
            width = shutil.get_terminal_size((80, 20)).columns
            self.stream.write("\r" + " " * (width - 1) + "\r")
            self.stream.flush()
            self.shown = False


def plot(path: str, meta: dict, rows: list[dict]) -> None:
    """One figure: per-call bars of GFLOP/s for each algorithm (and PyTorch); with PyTorch, the
    time ratio fastconv/PyTorch of each call next to them; the roofline of the measured peak and
    bandwidth with every measured call on it; and what was measured on what."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["layer"], row["direction"]), []).append(row)
    series = list(dict.fromkeys(r["algo"] for r in rows))
    has_torch = any(r["torch"] for r in rows)
    names = series + (["PyTorch"] if has_torch else [])
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(series)}
    colors["PyTorch"] = (0.25, 0.25, 0.25, 1.0)
    per_group = max(len(g) for g in groups.values()) + has_torch

    height = max(11.0, 0.16 * len(groups) * (per_group + 1))
    fig = plt.figure(figsize=(20, height))
    grid = fig.add_gridspec(2, 3, width_ratios=[3, 1.2, 3] if has_torch else [3, 0.01, 3],
                            hspace=0.25, wspace=0.08 if has_torch else 0.3)
    bars = fig.add_subplot(grid[:, 0])
    _throughput_bars(bars, meta, groups, names, colors, per_group)
    if has_torch:
        _ratio_bars(fig.add_subplot(grid[:, 1], sharey=bars), groups, colors)
    roof = fig.add_subplot(grid[0, 2])
    _roofline(roof, meta, rows, series, colors, has_torch)
    notes = fig.add_subplot(grid[1, 2])
    notes.axis("off")
    notes.text(0, 1, _notes(meta), va="top", ha="left", fontsize=9, wrap=True,
               family="monospace", transform=notes.transAxes)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _labels(groups):
    return [f"{layer}  {DIRECTION_LABELS[direction]}" for layer, direction in groups]


def _throughput_bars(ax, meta, groups, names, colors, per_group):
    import matplotlib.pyplot as plt

    slot = 0.8 / per_group
    for i, group in enumerate(groups.values()):
        entries = [(r["algo"], r["gflops"]) for r in group]
        if group[0]["torch"]:
            entries.append(("PyTorch", group[0]["torch_gflops"]))
        for j, (name, value) in enumerate(entries):
            ax.barh(i - 0.4 + slot * (j + 0.5), value, height=slot, color=colors[name])
    ax.set_yticks(range(len(groups)), _labels(groups), fontsize=8)
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set_xscale("log")
    ax.set_xlabel("GFLOP/s (log scale; higher is better)")
    ax.set_title(f"Throughput per call ({meta['backend']}, {meta['dtype']}, batch "
                 f"{meta['batch']})")
    peak = meta["peak_flops"] / 1e9
    ax.axvline(peak, color="red", linestyle="--", linewidth=1)
    ax.grid(axis="x", which="both", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[n]) for n in names]
    handles.append(plt.Line2D([], [], color="red", linestyle="--"))
    ax.legend(handles, names + [f"measured peak {peak:.0f} GFLOP/s"], loc="lower right",
              fontsize=8, framealpha=0.9)


def _ratio_bars(ax, groups, colors):
    """Bars from 1 on a log axis: to the left where fastconv is faster, to the right where
    it is slower (the auto row of each call)."""
    import matplotlib.ticker as ticker

    ratios = []
    for i, group in enumerate(groups.values()):
        row = per_call(group)[0]
        if row["ratio"] is None:
            continue
        ratio = row["ratio"]
        ratios.append(ratio)
        ax.barh(i, ratio - 1, left=1, height=0.6, color=colors[row["algo"]])
        ax.text(ratio, i, f" {ratio:.2f} ", va="center", ha="left" if ratio >= 1 else "right",
                fontsize=7)
    reach = max(2.0, *(max(r, 1 / r) for r in ratios)) * 1.6
    ax.set_xscale("log")
    ax.set_xlim(1 / reach, reach)
    ticks = [t for t in (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8, 16) if 1 / reach <= t <= reach]
    ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ticker.FixedFormatter(
        [f"1/{round(1 / t)}" if t < 1 else f"{t:g}" for t in ticks]))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.axvline(1.0, color="black", linewidth=1)
    ax.tick_params(axis="y", labelleft=False)
    ax.set_xlabel("time fastconv / PyTorch (< 1: faster)")
    ax.set_title("Ratio to PyTorch")
    ax.grid(axis="x", alpha=0.3)


def _roofline(ax, meta, rows, series, colors, has_torch):
    import numpy as np

    peak, bandwidth = meta["peak_flops"] / 1e9, meta["bandwidth"] / 1e9
    ridge = peak / bandwidth
    intensities = [r["intensity"] for r in rows] + [ridge]
    x = np.logspace(np.log10(min(intensities) / 3), np.log10(max(intensities) * 3), 200)
    ax.plot(x, np.minimum(peak, bandwidth * x), color="red", linewidth=2,
            label=f"roof: min({peak:.0f} GFLOP/s, {bandwidth:.1f} GB/s x intensity)")
    for name in series:
        mine = [r for r in rows if r["algo"] == name]
        ax.scatter([r["intensity"] for r in mine], [r["gflops"] for r in mine],
                   color=colors[name], s=28, label=name, zorder=3)
    if has_torch:
        auto = [r for r in per_call(rows) if r["torch"]]
        ax.scatter([r["intensity"] for r in auto], [r["torch_gflops"] for r in auto],
                   color=colors["PyTorch"], marker="x", s=28, label="PyTorch", zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte of minimum traffic)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title("Roofline: measured peak and copy bandwidth")
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def _notes(meta) -> str:
    import textwrap

    lines = [f"fastconv {meta['fastconv']} bench, suite {meta['suite']}, {meta['date']}",
             *textwrap.wrap(f"machine: {meta['machine_line']}", 80),
             f"peak {meta['peak_flops'] / 1e9:.1f} GFLOP/s ({meta['peak_how']})",
             f"bandwidth {meta['bandwidth'] / 1e9:.1f} GB/s ({meta['bandwidth_how']})"]
    if "torch" in meta:
        lines.append(f"baseline: PyTorch {meta['torch']}, {meta['torch_threads']} threads")
    lines += [f"{meta['threads']} threads; median of >= {meta['min_repeat']} runs and "
              f">= {meta['min_time_s']:g} s per call, in {meta['rounds']} rounds of blocks",
              f"(one contender at a time, each after {meta['idle_gap_s']:g} s idle)",
              "GFLOP/s counts a multiply-add as 2; intensity = FLOPs / minimum bytes;",
              "points above the bandwidth roof ran from cache",
              *textwrap.wrap(f"command: {meta['command']}", 80)]
    return "\n".join(lines)


# ---- whole models ------------------------------------------------------------------------------

def model_header(meta: dict) -> str:
    return "\n".join([
        f"fastconv {meta['fastconv']} bench: whole models, fastconv.torch.convert against "
        f"plain PyTorch {meta['torch']}, same weights, batch and {meta['threads']} threads",
        f"machine: {meta['machine_line']}",
        "train: zero_grad, forward, cross-entropy, backward, SGD step; infer: eval() forward "
        "under no_grad",
        f"timing: a warm-up step each, then {meta['rounds']} rounds of blocks (one contender at "
        f"a time, each after {meta['idle_gap_s']:g} s idle), at least {meta['min_repeat']} "
        f"steps and {meta['min_time_s']:g} s each; median ms, interquartile spread"])


class ModelTable(Columns):
    """One line per (model, mode), the model's name only on its first line."""

    columns = (("model", 16, "<"), ("mode", 6, "<"), ("batch", 12, "<"), ("fastconv ms", 12, ">"),
               ("±", 5, ">"), ("torch ms", 10, ">"), ("±", 5, ">"), ("ratio", 6, ">"))

    def __init__(self):
        self.last = None

    def format(self, row: dict) -> str:
        shown = row["model"] if row["model"] != self.last else ""
        self.last = row["model"]
        shape = "x".join(str(s) for s in row["input_shape"])
        f, t = row["fastconv"], row["torch"]
        return self._line([shown, row["mode"], shape, f"{f['median_ms']:.2f}",
                           f"{f['spread']:.0%}", f"{t['median_ms']:.2f}", f"{t['spread']:.0%}",
                           f"{row['ratio']:.2f}"]).rstrip()


def model_footer(summary: dict, wall_s: float, rows: int) -> str:
    lines = [f"fastconv/PyTorch median-time ratio, {mode}: geometric mean "
             f"{s['geomean_ratio']:.2f}, worst {s['worst_ratio']:.2f} over {s['models']} models"
             for mode, s in summary.items()]
    lines.append(f"{rows} rows in {wall_s:.0f} s")
    return "\n".join(lines)


def profile_text(row: dict) -> str:
    """The op-by-op breakdown of one row: self CPU ms per step by op family, both contenders
    side by side, then each contender's most expensive ops."""
    prof = row["profile"]
    keys = sorted({k for c in prof.values() for k in c["families"]},
                  key=lambda k: -max(c["families"].get(k, 0.0) for c in prof.values()))
    lines = [f"profile {row['model']} {row['mode']}: self CPU ms per step (torch.profiler)",
             f"  {'op family':22} {'fastconv':>9} {'torch':>9} {'ratio':>6}"]
    for key in keys:
        f, t = (prof[c]["families"].get(key, 0.0) for c in ("fastconv", "torch"))
        ratio = f"{f / t:6.2f}" if t > 0 else "     -"
        lines.append(f"  {key:22} {f:9.2f} {t:9.2f} {ratio}")
    lines.append(f"  {'all':22} {prof['fastconv']['total']:9.2f} {prof['torch']['total']:9.2f}")
    for contender in ("fastconv", "torch"):
        lines.append(f"  top {contender} ops: " + ", ".join(
            f"{name} {ms:.2f}" for name, ms in prof[contender]["ops"][:6]))
    return "\n".join(lines)


def model_plot(path: str, meta: dict, rows: list[dict]) -> None:
    """Bars of the median step time of each model and mode, fastconv beside PyTorch (log
    scale), with the ratio written on each pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len({r["mode"] for r in rows}), figsize=(14, 1.2 + 0.9 * len(
        {r["model"] for r in rows})), squeeze=False)
    colors = {"fastconv": plt.get_cmap("tab10")(0), "torch": (0.25, 0.25, 0.25, 1.0)}
    for ax, mode in zip(axes[0], [m for m in ("train", "infer") if any(r["mode"] == m
                                                                       for r in rows)]):
        mine = [r for r in rows if r["mode"] == mode]
        for i, row in enumerate(mine):
            for j, name in enumerate(("fastconv", "torch")):
                t = row[name]
                ax.barh(i - 0.2 + 0.4 * j, t["median_ms"], height=0.38, color=colors[name],
                        xerr=[[t["median_ms"] - t["q1_ms"]], [t["q3_ms"] - t["median_ms"]]],
                        label=name if i == 0 else None)
            ax.text(max(row["fastconv"]["median_ms"], row["torch"]["median_ms"]) * 1.15, i,
                    f"{row['ratio']:.2f}x", va="center", fontsize=9)
        ax.set_yticks(range(len(mine)), [r["model"] for r in mine])
        ax.set_ylim(len(mine) - 0.5, -0.5)
        ax.set_xscale("log")
        longest = max(max(r["fastconv"]["q3_ms"], r["torch"]["q3_ms"]) for r in mine)
        ax.set_xlim(right=longest * 4)  # room for the ratio written after the bars
        ax.set_xlabel("median ms per step (log scale; lower is better)")
        ax.set_title(f"{mode}: fastconv.torch.convert vs PyTorch")
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"fastconv {meta['fastconv']}, {meta['date']}: {meta['machine_line']}",
                 fontsize=8, wrap=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
