"""Two runs of the layer bench side by side: was anything slower than before?

    python benchmarks/compare.py BEFORE.json AFTER.json

For every call both runs timed (auto's choice), fastconv's median before and after and its
ratio to PyTorch before and after. Absolute times drift between runs on a shared machine
(PyTorch's own figures moved by 20-30% between runs an hour apart here), so a row counts as
slower only when both its time and its ratio to PyTorch in the same run grew by more than
10% and more than the widest interquartile spread of the four figures.
"""
from __future__ import annotations

import json
import math
import sys


def rows(path):
    with open(path) as f:
        data = json.load(f)
    return {(r["layer"], r["direction"]): r for r in data["rows"] if r["auto"]}


def main(argv=None) -> int:
    before_path, after_path = (argv or sys.argv[1:])[:2]
    before, after = rows(before_path), rows(after_path)
    print(f"{'layer':29} {'direction':16} {'fastconv ms before -> after':>28} "
          f"{'ratio to torch before -> after':>31}")
    slower = []
    common = [k for k in after if k in before]
    for key in common:
        a, b = before[key], after[key]
        time_change = b["time"]["median_ms"] / a["time"]["median_ms"]
        ratio_change = b["ratio"] / a["ratio"]
        noise = max(a["time"]["spread"], b["time"]["spread"], a["torch"]["spread"],
                    b["torch"]["spread"])
        worse = min(time_change, ratio_change) > max(1.10, 1 + noise)
        slower += [key] if worse else []
        print(f"{key[0]:29} {key[1]:16} {a['time']['median_ms']:12.3f} -> "
              f"{b['time']['median_ms']:9.3f} {a['ratio']:17.2f} -> {b['ratio']:6.2f}"
              + ("  slower" if worse else ""))

    def geomean(values):
        values = list(values)
        return math.exp(sum(math.log(v) for v in values) / len(values))

    print(f"geometric mean ratio to PyTorch: before {geomean(before[k]['ratio'] for k in common):.2f}"
          f", after {geomean(after[k]['ratio'] for k in common):.2f}; fastconv time after/before "
          f"{geomean(after[k]['time']['median_ms'] / before[k]['time']['median_ms'] for k in common):.2f}")
    print(f"slower in time and in ratio, beyond 10% and the widest spread: "
          f"{', '.join(f'{layer} {d}' for layer, d in slower) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
