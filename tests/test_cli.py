"""``python -m fastconv check``: the self-test users run after installing."""
import subprocess
import sys
import types

import pytest

from fastconv import check, cli, dispatch, registry
from fastconv.reference import conv as reference_conv


def test_check_command_passes_and_lists_every_op(capsys):
    """The whole check, run in this process (the kernels it calls are compiled here already;
    a fresh process compiled them again, 40 s of the CI run); the command itself is run as a
    user runs it below."""
    pytest.importorskip("torch")
    assert cli.main(["check"]) == 0
    stdout = capsys.readouterr().out
    for op in dispatch.OPS:
        assert f" {op} " in stdout
    assert "FAIL" not in stdout
    rows = sum(len(dispatch.algorithms(op)) for op in dispatch.OPS)
    assert f"check: {rows} of {rows} passed, 0 failed, 0 skipped" in stdout
    for op in dispatch.OPS:
        for algo in dispatch.algorithms(op):  # every CPU algorithm of every op has a PASS row
            assert any(line.split()[1:3] == [op, algo] and "PASS" in line
                       for line in stdout.splitlines()), (op, algo)


def test_check_can_select_ops():
    """``python -m fastconv check --op ...`` as a command, in a fresh process."""
    pytest.importorskip("torch")
    done = subprocess.run([sys.executable, "-m", "fastconv", "check", "--op", "avg_pool2d"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0
    assert "avg_pool2d " in done.stdout and "conv2d " not in done.stdout


@pytest.fixture
def broken_algorithm():
    """A conv algorithm whose forward is off by 1e-3: check must catch it."""
    broken = types.SimpleNamespace(**{name: getattr(reference_conv, name) for name in
                                      ("backward_data", "backward_weight", "backward_bias")})
    broken.forward = lambda x, w, b, p: reference_conv.forward(x, w, b, p) + 1e-3
    dispatch.algorithms("conv2d")
    registry.register(registry.Algorithm("broken", "cpu", "conv", broken, "deliberately wrong"))
    yield
    registry.unregister("conv", "cpu", "broken")


def test_check_reports_a_wrong_algorithm(broken_algorithm):
    rows = {(r.op, r.algo): r for r in check.run(ops=["conv2d", "conv2d_backward"])}
    assert rows["conv2d", "broken"].status == "FAIL"
    assert rows["conv2d", "broken"].oracle == "reference"
    assert rows["conv2d_backward", "broken"].status == "PASS"  # its backward is the reference's
    out = []
    assert check.main(ops=["conv2d"], out=types.SimpleNamespace(write=out.append)) == 1


def test_check_skips_the_reference_without_torch(monkeypatch):
    monkeypatch.setattr(check, "torch_available", lambda: False)
    rows = check.run(ops=["max_pool2d"])
    assert ("SKIP", "torch is not installed") in [(r.status, r.note) for r in rows]
    assert all(r.status == "PASS" for r in rows if r.algo != "reference")
