"""Is the bench fair to PyTorch? Its PyTorch figure for each quick-suite row, against the same
PyTorch call timed alone in a fresh process.

    python benchmarks/fairness.py [--suite quick] [--layers NAME ...] [--out FILE]
                                  [--also-without-gap]

The bench times fastconv and PyTorch on the same call, in blocks with an idle gap before each
(fastconv/bench/timing.py). If a contender were timed while the other's worker threads still
spin, its figure would differ from the same call timed where no other library has run: here,
for every row, a fresh Python process imports only PyTorch, builds the same arrays and times
PyTorch's call with the same rules (warm-up, then at least as many runs and seconds as the
bench), in ``FRESH`` such processes, since process-to-process differences are part of the
noise (buffer placement alone moves PyTorch's 1x1 convolutions between ~6 and ~22 ms here). A
row agrees when the bench's median lies within the fresh processes' medians, widened by the
wider interquartile range on either side, or within 10% of their median.
``--also-without-gap`` runs the bench once more with no idle gap, to show what the gap is for.

Prints one line per row and a verdict, and writes the same to ``--out``. Run it alone on the
machine (no other benchmark or test run beside it).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

AGREE_WITHIN = 0.10  # relative difference of medians that counts as agreement in any case
FRESH = 3  # fresh processes timing PyTorch alone, per row


def alone(layer_name: str, direction: str, threads: int, min_repeat: int, min_time: float):
    """Time PyTorch's call for one zoo row in this (fresh) process; its timing summary."""
    import torch

    from fastconv.bench import baseline, timing, zoo

    torch.set_num_threads(threads)
    call = zoo.BY_NAME[layer_name].calls(np.float32)[direction]
    fn = baseline.torch_call(call)
    t = timing.measure(fn, min_repeat=min_repeat, min_time=min_time)
    return t.summary()


def agrees(bench: dict, fresh: list[dict]) -> bool:
    """The bench's median within the fresh medians' range widened by the wider interquartile
    range, or within AGREE_WITHIN of their median."""
    b = bench["median_ms"]
    medians = [f["median_ms"] for f in fresh]
    band = max(t["q3_ms"] - t["q1_ms"] for t in [bench, *fresh])
    centre = float(np.median(medians))
    return min(medians) - band <= b <= max(medians) + band or abs(b - centre) <= \
        AGREE_WITHIN * centre


def bench_rows(suite, layers, gap):
    from fastconv.bench import Options, suite as bench_suite, timing

    o = Options(suite=suite, layers=layers, vs_torch=True,
                **({} if gap is None else {"idle_gap": gap}))
    selected = bench_suite.check_options(o)
    device = bench_suite.device_for(o)
    roofs = bench_suite.measure_machine(device, o.dtype)
    rows = list(bench_suite.run(o, bench_suite.plan(o, selected), device, roofs))
    return o, bench_suite.per_call(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="quick")
    parser.add_argument("--layers", nargs="+")
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument("--also-without-gap", action="store_true")
    parser.add_argument("--alone", nargs=5, metavar=("LAYER", "DIRECTION", "THREADS", "REPEAT",
                                                     "MIN_TIME"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.alone:
        layer, direction, threads, repeat, min_time = args.alone
        print(json.dumps(alone(layer, direction, int(threads), int(repeat), float(min_time))))
        return 0

    from fastconv.bench import timing

    runs = [("bench, idle gap", None)] + ([("bench, no gap", 0.0)] if args.also_without_gap
                                         else [])
    measured = {label: bench_rows(args.suite, args.layers, gap) for label, gap in runs}
    o, rows = measured[runs[0][0]]
    min_repeat, min_time = o.repeats()
    lines = [f"fairness check: PyTorch's figure in `python -m fastconv bench --suite {o.suite} "
             f"--vs torch` against the same call alone in a fresh process",
             f"machine: {timing.cpu_device(o.threads).line()}",
             f"{o.threads} threads; at least {min_repeat} runs and {min_time:g} s per figure; "
             f"alone: the median of {FRESH} fresh processes' medians [their range]; bench: "
             f"median [interquartile range], ok or OFF, ratio to alone; ms", ""]
    header = f"{'layer':29} {'dir':16} {'alone, ' + str(FRESH) + ' fresh processes':>30}"
    for label, _ in runs:
        header += f" {label:>30}"
    lines.append(header)
    verdicts = {label: 0 for label, _ in runs}
    for row in rows:
        fresh = [json.loads(subprocess.run(
            [sys.executable, __file__, "--alone", row["layer"], row["direction"],
             str(o.threads), str(min_repeat), str(min_time)],
            capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            for _ in range(FRESH)]
        medians = sorted(f["median_ms"] for f in fresh)
        centre = float(np.median(medians))
        line = (f"{row['layer']:29} {row['direction']:16} {centre:9.3f} "
                f"[{medians[0]:.3f}..{medians[-1]:.3f}]".ljust(78))
        for label, _ in runs:
            other = next(r for r in measured[label][1] if (r["layer"], r["direction"]) ==
                         (row["layer"], row["direction"]))["torch"]
            ok = agrees(other, fresh)
            verdicts[label] += ok
            line += (f" {other['median_ms']:9.3f} [{other['q1_ms']:.3f}-{other['q3_ms']:.3f}] "
                     f"{'ok ' if ok else 'OFF'} {other['median_ms'] / centre:4.2f}")
        lines.append(line)
        print(lines[-1], flush=True)
    lines.append("")
    for label, count in verdicts.items():
        lines.append(f"{label}: {count} of {len(rows)} rows agree with PyTorch alone (within "
                     f"the fresh medians' range widened by the wider interquartile range, or "
                     f"{AGREE_WITHIN:.0%} of their median)")
    text = "\n".join(lines)
    print("\n".join(lines[-len(verdicts):]))
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0 if verdicts[runs[0][0]] == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
