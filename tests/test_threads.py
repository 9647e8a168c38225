"""Calls from several Python threads at once: the first ones race to load the CPU backend, later
ones run kernels concurrently; every thread must get the same, right answer."""
import subprocess
import sys
import textwrap


def test_concurrent_first_calls_in_a_fresh_process():
    script = textwrap.dedent("""
        import threading
        import numpy as np
        import fastconv

        x = np.random.default_rng(0).standard_normal((2, 4, 9, 9))
        w = np.random.default_rng(1).standard_normal((6, 4, 3, 3))
        barrier, results, errors = threading.Barrier(4), [], []

        def work():
            try:
                barrier.wait()
                for _ in range(5):
                    results.append(fastconv.conv2d(x, w, padding=1))
                    fastconv.max_pool2d(x, 3, stride=2, padding=1)
            except Exception as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(results) == 20
        assert all(r.tobytes() == results[0].tobytes() for r in results)
        expected = fastconv.conv2d(x, w, padding=1, algo="reference")
        assert np.abs(results[0] - expected).max() <= 1e-10 * np.abs(expected).max()
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout + done.stderr
