"""Calls from several Python threads at once: the first ones race to load the CPU backend, later
ones run kernels concurrently; every thread must get the same, right answer."""
import subprocess
import sys
import textwrap

import pytest


# Prepended to every script: start `count` threads running `work`, wait for all of them.
IN_THREADS = """
    import threading

    def in_threads(count, work):
        threads = [threading.Thread(target=work) for _ in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
"""


def _run(script, env=None, timeout=300):
    """Run ``script`` (with :data:`IN_THREADS`) in a fresh Python; it must print "ok" last."""
    import os

    source = textwrap.dedent(IN_THREADS) + textwrap.dedent(script)
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout + done.stderr
    return done.stdout


def test_concurrent_first_calls_in_a_fresh_process():
    _run("""
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

        in_threads(4, work)
        assert not errors, errors
        assert len(results) == 20
        assert all(r.tobytes() == results[0].tobytes() for r in results)
        expected = fastconv.conv2d(x, w, padding=1, algo="reference")
        assert np.abs(results[0] - expected).max() <= 1e-10 * np.abs(expected).max()
        print("ok")
    """)


# Four threads, each calling every CPU algorithm of every family many times; each result must
# be bitwise equal to the serial call's.
THREADED = """
    import numpy as np
    import fastconv
    from fastconv.cpu import _threads

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    calls = [("conv2d", (x, rng.standard_normal((8, 8, 3, 3)).astype(np.float32)),
              dict(padding=1, algo=a)) for a in ("direct", "im2col")]
    calls += [("conv2d", (x, rng.standard_normal((8, 1, 3, 3)).astype(np.float32)),
               dict(padding=1, groups=8, stride=2, algo="depthwise")),
              ("conv2d", (x, rng.standard_normal((4, 8, 1, 1)).astype(np.float32)),
               dict(algo="pointwise")),
              ("max_pool2d", (x,), dict(kernel_size=3, stride=2, padding=1)),
              ("avg_pool2d", (x,), dict(kernel_size=2)),
              ("adaptive_avg_pool2d", (x,), dict(output_size=(3, 5))),
              ("batch_norm", (x, None, None), dict(training=True))]
    serial = [getattr(fastconv, op)(*a, **kw).tobytes() for op, a, kw in calls]
    ITERATIONS = 25
    barrier, bad, done = threading.Barrier(4), [], []

    def work():
        barrier.wait()
        for _ in range(ITERATIONS):
            for (op, a, kw), expected in zip(calls, serial):
                if getattr(fastconv, op)(*a, **kw).tobytes() != expected:
                    bad.append(op)
                done.append(op)

    in_threads(4, work)
    assert not bad, bad
    assert len(done) == 4 * ITERATIONS * len(calls)
    print(_threads.layer(), len(done), "ok")
"""


def test_four_threads_bitwise_equal_to_serial_on_the_chosen_layer():
    out = _run(THREADED)
    assert out.split()[0] in ("tbb", "omp")  # a thread-safe layer was chosen


@pytest.mark.parametrize("asked", ["workqueue", "tbb"])
def test_unsafe_or_missing_layer_falls_back_to_serialised_kernels(asked):
    """workqueue (asked for) is not thread-safe; tbb (asked for, not installed here) cannot
    load: either way the kernels run one at a time and every result is still right."""
    if asked == "tbb":
        pytest.importorskip("numba")
        try:
            import tbb  # noqa: F401
            pytest.skip("tbb is installed, so it loads")
        except ImportError:
            pass
    out = _run(THREADED, env={"NUMBA_THREADING_LAYER": asked})
    assert out.split()[0] == "workqueue"


def test_fastconv_and_torch_in_one_process_neither_deadlock_nor_oversubscribe():
    """Both libraries' thread pools in one loop, from two Python threads, finish well within
    the timeout; neither pool has more threads than the machine has cores."""
    pytest.importorskip("torch")
    _run("""
        import os
        import numpy as np
        import numba
        import torch
        import fastconv

        cores = len(os.sched_getaffinity(0))
        x = np.random.default_rng(0).standard_normal((4, 16, 28, 28)).astype(np.float32)
        w = np.random.default_rng(1).standard_normal((16, 16, 3, 3)).astype(np.float32)
        expected = fastconv.conv2d(x, w, padding=1).tobytes()
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        bad = []

        def work():
            for _ in range(30):
                torch.nn.functional.conv2d(tx, tw, padding=1)
                if fastconv.conv2d(x, w, padding=1).tobytes() != expected:
                    bad.append(1)

        in_threads(2, work)
        assert not bad
        assert numba.get_num_threads() <= cores and torch.get_num_threads() <= cores
        print("ok")
    """, timeout=240)


# After each call returns, the CPU time that the process's other threads (Numba's workers,
# any BLAS worker) burn in the next 0.3 s, from their CPU-time clocks: spinning workers show up
# as milliseconds (OpenBLAS's spin after one product: ~130 ms; GNU OpenMP's default spin: ~6 ms
# per worker), sleeping ones as nothing. The clocks, not /proc's schedstat: schedstat's counter
# of a running thread is brought up to date only at a tick or a switch, so a worker's last
# milliseconds of real work inside the call showed up after it, when it went to sleep (a
# 2-3 ms mode in a quarter of the samples, which failed CI); reading a thread's clock
# (clock_gettime on its CPU-clock id) counts its run time up to now.
SPINNING = """
    import os, time
    import numpy as np
    from threadpoolctl import threadpool_info
    import fastconv

    def others_ns():
        me, total = os.getpid(), 0
        for tid in os.listdir(f"/proc/{me}/task"):
            if int(tid) != me:  # Linux's clock id of thread tid's CPU time (CPUCLOCK_SCHED)
                total += time.clock_gettime_ns((~int(tid) << 3) | 6)
        return total

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 32, 28, 28)).astype(np.float32)
    calls = [("conv2d", (x, rng.standard_normal((64, 32, 3, 3)).astype(np.float32)),
              dict(padding=1, algo=a)) for a in ("im2col", "direct")]
    calls += [("conv2d", (x, rng.standard_normal((64, 32, 1, 1)).astype(np.float32)),
               dict(algo="pointwise")),
              ("conv2d", (x, rng.standard_normal((32, 1, 3, 3)).astype(np.float32)),
               dict(padding=1, groups=32, algo="depthwise")),
              ("conv2d_backward", (rng.standard_normal((8, 64, 28, 28)).astype(np.float32), x,
                                   rng.standard_normal((64, 32, 3, 3)).astype(np.float32)),
               dict(padding=1, algo="im2col")),
              ("max_pool2d", (x,), dict(kernel_size=3, stride=2, padding=1)),
              ("batch_norm", (x, None, None), dict(training=True))]
    for op, a, kw in calls:
        getattr(fastconv, op)(*a, **kw)   # compiled, SciPy's BLAS loaded, the pools started
    blas_before = sorted((i["filepath"], i["num_threads"]) for i in threadpool_info()
                         if i["user_api"] == "blas")
    time.sleep(0.5)
    for op, a, kw in calls:
        burned = []
        for _ in range(5):
            getattr(fastconv, op)(*a, **kw)
            before = others_ns()
            time.sleep(0.3)
            burned.append(others_ns() - before)
        print(op, kw.get("algo", ""), sorted(burned)[2] / 1e6)
    blas_after = sorted((i["filepath"], i["num_threads"]) for i in threadpool_info()
                        if i["user_api"] == "blas")
    assert blas_after == blas_before, (blas_before, blas_after)
    print("ok")
"""


def test_no_worker_keeps_spinning_after_a_call_returns():
    """Every CPU family: in the 0.3 s after a call, the other threads burn under 2 ms of CPU
    (the median of 5 calls), and BLAS's thread counts are what they were before."""
    out = _run(SPINNING, timeout=600)
    burned = {" ".join(line.split()[:-1]): float(line.split()[-1])
              for line in out.splitlines()[:-1]}
    assert len(burned) == 7, out
    assert all(ms < 2.0 for ms in burned.values()), burned


def test_user_wait_policy_is_left_alone():
    """GOMP_SPINCOUNT is set only while Numba's OpenMP runtime loads, and not at all when the
    user chose a wait policy."""
    _run("""
        import os
        import numpy as np
        import fastconv
        fastconv.conv2d(np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32))
        assert "GOMP_SPINCOUNT" not in os.environ
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
        print("ok")
    """, env={"OMP_WAIT_POLICY": "ACTIVE"})


def test_fastconv_torch_runs_on_torchs_thread_budget():
    """Through fastconv.torch, CPU kernels run on torch.get_num_threads() threads (never more
    than Numba has), and Numba's own setting is back afterwards."""
    pytest.importorskip("torch")
    _run("""
        import numba
        import torch
        import fastconv.torch
        from fastconv.cpu import im2col

        seen, forward = [], im2col.forward

        def recording(*args):
            seen.append(numba.get_num_threads())
            return forward(*args)

        im2col.forward = recording
        x, w = torch.randn(2, 8, 9, 9), torch.randn(16, 8, 3, 3)
        before = numba.get_num_threads()
        for threads in (1, 2, 64):
            torch.set_num_threads(threads)
            fastconv.torch.conv2d(x, w, padding=1, algo="im2col")
        assert seen == [1, min(2, numba.config.NUMBA_NUM_THREADS),
                        numba.config.NUMBA_NUM_THREADS], seen
        assert numba.get_num_threads() == before
        print("ok")
    """)
