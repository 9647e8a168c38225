"""The threading options, measured against each other on whole models: the training step of
every network of the model zoo (``python -m fastconv bench --models``) under each setting of
the environment, fastconv against PyTorch in each run.

    python benchmarks/threads.py [--rounds 2] [--min-time 0.5] [--models NAME ...] [--out FILE]

Each setting is a fresh process (the variables are read when the libraries load); the
settings take turns, round after round, so a slow spell of the machine falls on all of them.
Reported per model and setting: fastconv's median ms per step (the median over the rounds),
PyTorch's, and the ratio. The first setting is the default environment; the contention check
of issue 17 is the default against ``OPENBLAS_NUM_THREADS=1`` (at most 1.1x). Run it alone on
the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

SETTINGS = [
    ("default (nothing set)", {}),
    ("OPENBLAS_NUM_THREADS=1", {"OPENBLAS_NUM_THREADS": "1"}),
    # these two reach PyTorch's OpenMP runtime too (both read them when they load); fastconv
    # then leaves its own spin count alone
    ("GOMP_SPINCOUNT=300000 (both OpenMPs)", {"GOMP_SPINCOUNT": "300000"}),
    ("OMP_WAIT_POLICY=PASSIVE (both OpenMPs)", {"OMP_WAIT_POLICY": "PASSIVE"}),
    ("NUMBA_THREADING_LAYER=workqueue", {"NUMBA_THREADING_LAYER": "workqueue"}),
    ("NUMBA_NUM_THREADS=1 (fastconv serial)", {"NUMBA_NUM_THREADS": "1"}),
]


def run(env, models, min_time, repeat):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "models.json")
        command = [sys.executable, "-m", "fastconv", "bench", "--models", *models, "--modes",
                   "train", "--min-time", str(min_time), "--repeat", str(repeat), "--json", path]
        subprocess.run(command, env={**os.environ, **env}, check=True, capture_output=True)
        with open(path) as f:
            return json.load(f)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=[])
    parser.add_argument("--settings", type=int, nargs="+", metavar="INDEX",
                        help="only these settings (0-based indices of SETTINGS; 0 and 1 are the "
                             "contention check); default: all")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    settings = [SETTINGS[i] for i in args.settings] if args.settings else SETTINGS
    if settings[:2] != SETTINGS[:2]:
        raise SystemExit("threads.py: the settings must start with 0 1 (the default and "
                         "OPENBLAS_NUM_THREADS=1)")
    results = {label: [] for label, _ in settings}
    meta = None
    for r in range(args.rounds):
        order = settings[r % len(settings):] + settings[:r % len(settings)]
        for label, env in order:
            data = run(env, args.models, args.min_time, args.repeat)
            meta = meta or data["meta"]
            results[label].append({row["model"]: row for row in data["rows"]})
            print(f"round {r + 1}: {label} done", file=sys.stderr, flush=True)
    models = list(results[settings[0][0]][0])
    lines = ["threading options, training step, fastconv.torch.convert against plain PyTorch "
             "(python -m fastconv bench --models --modes train)",
             f"machine: {meta['machine_line']}",
             f"{args.rounds} rounds of every setting in turn; median over the rounds of each "
             f"run's median ms per step; ratio = fastconv / PyTorch in the same run", ""]
    head = f"{'setting':46}" + "".join(f" {m:>27}" for m in models)
    lines += [head, f"{'':46}" + " ".join(f"{'fastconv  torch  ratio':>27}" for _ in models)]
    table = {}
    for label, _ in settings:
        cells = ""
        for m in models:
            f = float(np.median([run_[m]["fastconv"]["median_ms"] for run_ in results[label]]))
            t = float(np.median([run_[m]["torch"]["median_ms"] for run_ in results[label]]))
            ratio = float(np.median([run_[m]["ratio"] for run_ in results[label]]))
            table[label, m] = f, t, ratio
            cells += f" {f:9.1f} {t:7.1f} {ratio:6.2f}".rjust(28)
        lines.append(f"{label:46}{cells}")
    default, single = SETTINGS[0][0], SETTINGS[1][0]
    lines.append("")
    lines.append("contention: fastconv's step at default settings / with OPENBLAS_NUM_THREADS=1: "
                 + ", ".join(f"{m} {table[default, m][0] / table[single, m][0]:.2f}"
                             for m in models))
    lines.append("  the same, each normalised by PyTorch's step in its own run (PyTorch uses MKL, "
                 "not OpenBLAS; this takes out the machine's drift between runs): "
                 + ", ".join(f"{m} {table[default, m][2] / table[single, m][2]:.2f}"
                             for m in models))
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
