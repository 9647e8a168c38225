"""benchmarks/gpu.sh, the one prepared GPU run, and its helpers: without a GPU each says so,
exits 0 and changes nothing (on a GPU machine the script itself is the test)."""
import subprocess
import sys
from pathlib import Path

import pytest

from fastconv import testing

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(testing.gpu_available(), reason="a GPU is visible: gpu.sh runs")


def _results():
    return sorted(p.name for p in (ROOT / "benchmarks" / "results").iterdir())


@pytest.mark.parametrize("command", [["bash", "benchmarks/gpu.sh"],
                                     [sys.executable, "benchmarks/gpu_kernels.py"],
                                     [sys.executable, "benchmarks/gpu_smoke.py"]],
                         ids=["gpu.sh", "gpu_kernels", "gpu_smoke"])
def test_without_a_gpu_it_says_so_and_exits_0_changing_nothing(command):
    before = _results()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no CUDA device visible" in done.stdout
    assert _results() == before
