"""The whole default test suite once more with Numba's bounds checking on.

``NUMBA_BOUNDSCHECK=1`` makes every array access of every CPU kernel check its index and raise
IndexError outside the array, so a kernel that reads or writes out of bounds on any case of
the suite fails it rather than returning garbage quietly. The run compiles every kernel afresh
(an empty Numba cache: kernels cached without the checks must not be reused) and takes about
twice the default run, hence ``-m slow``.
"""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[1]


@pytest.mark.slow
def test_default_suite_passes_with_bounds_checking(tmp_path):
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          str(ROOT / "tests")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=3600)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    print(run.stdout.strip().splitlines()[-1])
