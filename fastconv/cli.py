"""Command line: ``python -m fastconv <command>`` (or the ``fastconv`` script).

Commands:
    bench    time the layer zoo with fastconv's algorithms, optionally next to PyTorch
             (see fastconv.bench); the quick suite by default; --models times whole
             networks' training steps and inference against PyTorch
    explain  say which algorithm a call would run and why, and what it costs, without running it
    check    self-test: every backend, op and algorithm against its oracle (see fastconv.check)

Run ``python -m fastconv <command> --help`` for a command's options, and
``python -m fastconv explain <op> --help`` for an op's arguments.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys

from .dispatch import BACKENDS, OPS

DTYPES = ("float32", "float64")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastconv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    _bench_parser(commands)
    _explain_parser(commands)
    check = commands.add_parser("check", help="self-test every backend, op and algorithm")
    check.add_argument("--backend", choices=BACKENDS, action="append",
                       help="backend to check (repeatable; default: every available one)")
    check.add_argument("--op", choices=sorted(OPS), action="append",
                       help="op to check (repeatable; default: all)")
    args = parser.parse_args(argv)
    if args.command == "check":
        from . import check as self_check

        return self_check.main(backends=args.backend, ops=args.op)
    if args.command == "bench":
        return _bench(args, argv)
    return _explain(args)


# ---- bench ---------------------------------------------------------------------------------

def _bench_parser(commands):
    from .bench import timing, zoo

    bench = commands.add_parser(
        "bench", help="time the layer zoo (quick suite by default)",
        description="Time the layer zoo: median ms, GFLOP/s, percent of the measured peak and "
                    "bandwidth, and with --vs torch PyTorch's time in the same run and the "
                    "ratio fastconv/PyTorch (lower is better). Layers: "
                    + ", ".join(layer.name for layer in zoo.ZOO)
                    + f". The quick suite: {', '.join(zoo.QUICK)}.")
    bench.add_argument("--models", nargs="*", metavar="NAME",
                       help="time whole models instead of layers: a training step and "
                            "inference after fastconv.torch.convert against plain PyTorch, "
                            "same weights and batch (names or shell patterns of "
                            "fastconv.bench.models; none: all)")
    bench.add_argument("--overhead", action="store_true",
                       help="time tiny calls of every op, forward and backward: the NumPy API, "
                            "fastconv.torch and torch itself, and their ratios against the "
                            "targets (fastconv.bench.overhead)")
    bench.add_argument("--modes", nargs="+", choices=["train", "infer"],
                       help="with --models: which to time (default: both)")
    bench.add_argument("--profile", action="store_true",
                       help="with --models: break a step down op by op (torch.profiler), "
                            "fastconv against PyTorch")
    bench.add_argument("--suite", choices=sorted(zoo.SUITES), default="quick",
                       help="quick (default: one layer of each kind) or full (the whole zoo)")
    bench.add_argument("--layers", nargs="+", metavar="NAME",
                       help="zoo layers by name or shell pattern ('resnet50-*'), "
                            "from the whole zoo")
    bench.add_argument("--ops", nargs="+", metavar="OP",
                       help="only layers of these forward ops (conv2d, max_pool2d, ...)")
    bench.add_argument("--algo", default="auto",
                       help="auto (default: what the dispatcher picks), all (every algorithm "
                            "that can serve each call, side by side), or an algorithm name")
    bench.add_argument("--backend", choices=BACKENDS, default="cpu")
    bench.add_argument("--dtype", choices=DTYPES, default="float32")
    bench.add_argument("--vs", choices=["torch"], help="also time PyTorch's kernel for each call")
    bench.add_argument("--threads", type=int, default=None,
                       help="threads for fastconv and PyTorch (default: every core)")
    bench.add_argument("--repeat", type=int, default=None,
                       help="timed runs per call, at least (default: 5 quick, 10 full)")
    bench.add_argument("--min-time", type=float, default=None,
                       help="seconds of timed runs per call, at least (default: 0.2 quick, "
                            "1 full)")
    bench.add_argument("--idle-gap", type=float, default=None, metavar="SECONDS",
                       help="idle time before each block of timed runs, so that the previous "
                            "contender's thread pools have stopped spinning (default: "
                            f"{timing.IDLE_GAP_S:g})")
    bench.add_argument("--json", metavar="FILE", help="write every measurement to FILE")
    bench.add_argument("--plot", metavar="FILE.png",
                       help="write bars of GFLOP/s per call and a roofline chart (matplotlib)")


def _bench(args, argv) -> int:
    from . import bench
    from .bench import timing

    command = ["python", "-m", "fastconv"] + list(sys.argv[1:] if argv is None else argv)
    threads = timing.cores() if args.threads is None else args.threads
    gap = {} if args.idle_gap is None else {"idle_gap": args.idle_gap}
    if args.overhead:
        from .bench.overhead import OverheadOptions

        ignored = [flag for flag, given in (
            ("--models", args.models is not None), ("--modes", args.modes),
            ("--profile", args.profile), ("--plot", args.plot), ("--vs", args.vs),
            ("--layers", args.layers), ("--ops", args.ops), ("--algo", args.algo != "auto"),
            ("--backend", args.backend != "cpu"), ("--dtype", args.dtype != "float32"),
            ("--suite", args.suite != "quick")) if given]
        if ignored:
            print(f"fastconv bench: error: --overhead times its own tiny calls on the CPU in "
                  f"float32; it takes none of {ignored}", file=sys.stderr)
            return 2

        o = OverheadOptions(threads=threads,
                            **({} if args.repeat is None else {"min_repeat": args.repeat}),
                            **({} if args.min_time is None else {"min_time": args.min_time}),
                            **gap)
        return bench.main_overhead(o, args.json, argv=" ".join(command))
    if args.models is not None:
        modes = {} if not args.modes else {"modes": tuple(dict.fromkeys(args.modes))}
        o = bench.ModelOptions(names=args.models or None, threads=threads, profile=args.profile,
                               **modes,
                               **({} if args.repeat is None else {"min_repeat": args.repeat}),
                               **({} if args.min_time is None else {"min_time": args.min_time}),
                               **gap)
        return bench.main_models(o, args.json, args.plot, argv=" ".join(command))
    if args.profile or args.modes:
        print(f"fastconv bench: error: {'--profile' if args.profile else '--modes'} needs "
              f"--models", file=sys.stderr)
        return 2
    options = bench.Options(suite=args.suite, layers=args.layers, ops=args.ops, algo=args.algo,
                            backend=args.backend, dtype=args.dtype, vs_torch=args.vs == "torch",
                            threads=threads, min_repeat=args.repeat, min_time=args.min_time,
                            **gap)
    return bench.main(options, args.json, args.plot, argv=" ".join(command))


# ---- explain -------------------------------------------------------------------------------

def _value(text: str):
    """A command-line value: ``3`` -> 3, ``2,1`` -> (2, 1), ``same`` -> 'same',
    ``true``/``false`` -> bool, ``none`` -> None, ``0.1`` -> 0.1."""
    def one(token):
        low = token.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        if low == "none":
            return None
        for kind in (int, float):
            try:
                return kind(token)
            except ValueError:
                pass
        return token.strip()

    parts = [one(t) for t in text.split(",")]
    return parts[0] if len(parts) == 1 else tuple(parts)


def _shape(text: str):
    try:
        shape = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a shape is comma-separated ints such as 8,64,56,56; got {text!r}") from None
    return shape


BOOL_WORDS = {"1": True, "true": True, "0": False, "false": False}


def _flag(text: str):
    word = text.strip().lower()
    if word not in BOOL_WORDS:
        raise argparse.ArgumentTypeError(f"expected true or false (or 1/0), got {text!r}")
    return BOOL_WORDS[word]


def _bools(text: str):
    try:
        return tuple(_flag(t) for t in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated true/false (or 1/0), "
                                         f"got {text!r}") from None


def _explain_parser(commands):
    import fastconv

    explain = commands.add_parser(
        "explain", help="which algorithm a call runs and why, its FLOPs, bytes and workspace",
        description="Describe a call without running it: the algorithm auto picks and why, "
                    "every algorithm that could serve it, FLOPs, minimum bytes moved, "
                    "arithmetic intensity, workspace and index width. Example: python -m "
                    "fastconv explain conv2d --input 8,64,56,56 --weight 64,64,3,3 --padding 1")
    ops = explain.add_subparsers(dest="op", required=True, metavar="OP",
                                 help=", ".join(OPS))
    for op, spec in OPS.items():
        arrays = spec.arrays
        sub = ops.add_parser(op, help=f"explain a {op} call")
        for name in arrays:
            flags = [f"--{name.replace('_', '-')}"] + (["--input"] if name == "x" else [])
            sub.add_argument(*flags, dest=f"array_{name}", type=_shape, metavar="SHAPE",
                             help=f"shape of {name}: comma-separated ints")
        for name, param in inspect.signature(getattr(fastconv, op)).parameters.items():
            if name in arrays or name == "algo":
                continue
            default = param.default
            if isinstance(default, bool):
                kind, metavar = _flag, "BOOL"
            elif isinstance(default, tuple) and all(isinstance(v, bool) for v in default):
                kind, metavar = _bools, "BOOL,BOOL,BOOL"
            else:
                kind, metavar = _value, "VALUE"
            shown = "required" if default is inspect.Parameter.empty else f"default {default!r}"
            sub.add_argument(f"--{name.replace('_', '-')}", dest=f"param_{name}", type=kind,
                             metavar=metavar, help=f"as in fastconv.{op} ({shown})")
        sub.add_argument("--algo", default="auto", help="auto (default) or an algorithm name")
        sub.add_argument("--backend", choices=BACKENDS, default="cpu")
        sub.add_argument("--dtype", choices=DTYPES, default="float32")
        sub.add_argument("--json", action="store_true", help="print the description as JSON")


def _explain(args) -> int:
    from . import dispatch

    op = args.op
    values = vars(args)
    shapes = [values[f"array_{name}"] for name in OPS[op].arrays]
    while shapes and shapes[-1] is None:  # trailing optional arrays left out
        shapes.pop()
    kwargs = {k[len("param_"):]: v for k, v in values.items()
              if k.startswith("param_") and v is not None}
    try:
        info = dispatch.explain(op, *shapes, backend=args.backend, dtype=args.dtype,
                                algo=args.algo, **kwargs)
        others = {name: dispatch.explain(op, *shapes, backend=args.backend, dtype=args.dtype,
                                         algo=name, **kwargs)
                  for name in info["candidates"]}
    except (ValueError, TypeError) as e:
        print(f"fastconv explain: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        shown = {k: v for k, v in info.items() if k != "params"}
        shown["params"] = repr(info["params"])
        print(json.dumps(shown, indent=1, default=list))
        return 0
    print(describe(info, shapes, kwargs, others))
    return 0


def describe(info: dict, shapes, kwargs, others: dict) -> str:
    """The human-readable explanation of one call (``others``: explain of each candidate)."""
    names = OPS[info["op"]].arrays
    arrays = "  ".join(f"{name} {tuple(s)}" for name, s in zip(names, shapes) if s is not None)
    settings = "  ".join(f"{k}={v!r}" for k, v in kwargs.items())
    flops, moved, work = info["flops"], info["bytes"], info["workspace_bytes"]
    lines = [
        f"{info['op']}  {arrays}" + (f"  {settings}" if settings else ""),
        f"backend {info['backend']}, {info['dtype']}",
        "",
        f"runs:         {info['algo']}: {info['reason']}",
        f"              ({info['summary']})",
        "output:       " + ", ".join(str(s) for s in info["output_shapes"]),
        f"FLOPs:        {flops:,} ({flops / 1e9:.3f} GFLOP; a multiply-add counts 2)",
        f"min bytes:    {moved:,} ({moved / 2**20:.2f} MiB; every input read and every output "
        f"written once)",
        f"intensity:    {info['intensity']:.2f} FLOP/byte",
        f"workspace:    {work:,} bytes ({work / 2**20:.2f} MiB beyond inputs and outputs)",
        f"index width:  {info['index_bits']}-bit",
        "",
        "algorithms that can serve it (workspace, index width):",
    ]
    for name, other in others.items():
        mark = "*" if name == info["algo"] else " "
        lines.append(f"  {mark} {name:12} {other['workspace_bytes'] / 2**20:8.2f} MiB  "
                     f"{other['index_bits']}-bit  {other['summary']}")
    if info["rejected"]:
        lines.append("cannot serve it:")
        lines.extend(f"    {name:12} {why}" for name, why in info["rejected"].items())
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
