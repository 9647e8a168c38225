"""Command line: ``python -m fastconv <command>`` (or the ``fastconv`` script).

Commands:
    check    self-test: every backend, op and algorithm against its oracle (see fastconv.check)
"""
from __future__ import annotations

import argparse
import sys

from .dispatch import BACKENDS, OPS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastconv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="self-test every backend, op and algorithm")
    check.add_argument("--backend", choices=BACKENDS, action="append",
                       help="backend to check (repeatable; default: every available one)")
    check.add_argument("--op", choices=sorted(OPS), action="append",
                       help="op to check (repeatable; default: all)")
    args = parser.parse_args(argv)
    if args.command == "check":
        from . import check as self_check

        return self_check.main(backends=args.backend, ops=args.op)
    return 2


if __name__ == "__main__":
    sys.exit(main())
