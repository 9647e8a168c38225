"""The README's two set-up commands stay true, and CI runs the second one verbatim."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_the_main_job_and_the_tests():
    main_job, tests = readme_commands()
    assert main_job.endswith("python -m fastconv bench --vs torch")
    assert tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def test_readme_usage_example_runs_and_says_what_it_shows():
    code = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    fastconv, x, w = namespace["fastconv"], namespace["x"], namespace["w"]
    assert "fastconv.algorithms(\"conv2d\")  # " + str(fastconv.algorithms("conv2d")) in code
    info = fastconv.explain("conv2d", x.shape, w.shape, padding=1)
    for key in ("algo", "flops", "bytes", "workspace_bytes", "index_bits"):
        assert f"'{key}': {info[key]!r}" in code, key
