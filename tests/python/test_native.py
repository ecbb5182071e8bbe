"""The native heap sampler (``_native``, pyheap/) on this interpreter: accuracy against
tracemalloc and against known sizes, and safety in the situations a Lambda handler creates.

Every workload runs in its own process (native_scenarios.py): a crash is a failed exit status.
The module must exist when ``LMP_REQUIRE_NATIVE=1`` (``make test`` builds it first);
otherwise its absence skips these tests.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "native_scenarios.py")
sys.path.insert(0, os.path.join(HERE, "..", "..", "layer", "python"))

try:
    from lambda_memory_profiler import _native  # noqa: F401

    HAVE_NATIVE = True
except ImportError:
    HAVE_NATIVE = False

if not HAVE_NATIVE:
    if os.environ.get("LMP_REQUIRE_NATIVE") == "1":
        raise RuntimeError(
            f"LMP_REQUIRE_NATIVE=1 but lambda_memory_profiler._native is not built for "
            f"Python {sys.version_info[0]}.{sys.version_info[1]} (scripts/build-native.sh)"
        )
    pytestmark = pytest.mark.skip(reason="the native module is not built for this interpreter")


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> dict:
    full_env = dict(os.environ, PYTHONHASHSEED="0", **(env or {}))
    proc = subprocess.run(
        [sys.executable, SCRIPT, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"{args}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- accuracy -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["small", "large", "mixed", "realloc"])
def test_live_estimate_within_5_percent_of_tracemalloc(kind):
    # 16 KiB mean gap: ~2,000+ samples on the small-object workload (relative standard error
    # ~2%), so ±5% is a 2.5-sigma bound; the seeds are fixed, so the run is repeatable.
    for seed in ("1", "2"):
        r = run("accuracy", kind, "16384", seed)
        err = r["native"] / r["tracemalloc"] - 1.0
        assert abs(err) < 0.05, (kind, seed, r, err)


def test_live_estimate_at_the_default_interval():
    from lambda_memory_profiler._config import resolve

    r = run("accuracy", "large", str(resolve({}).heap_sample_bytes), "3")
    # Blocks far larger than the gap are sampled with probability ~1: the figure is ~exact.
    assert abs(r["native"] / r["tracemalloc"] - 1.0) < 0.01, r


@pytest.mark.parametrize("kind", ["", "realloc"])
def test_estimate_is_unbiased_over_20_seeds(kind):
    # "realloc": every block reaches its size through reallocs (the hook forgets the old
    # block's sample and counts the new size), the path the small objects never take.
    r = run("seeds", "20", "16384", kind)
    errors = r["errors"]
    assert len(errors) == 20
    assert abs(statistics.mean(errors)) < 0.02, errors
    # And the runs really differ (the seed reaches the sampler).
    assert len({round(e, 6) for e in errors}) > 10


# ---- safety ---------------------------------------------------------------------------------


def test_eight_threads_allocating_and_freeing():
    r = run("threads")
    assert r["mode"] == 1 and r["taken"] > 1000
    # Everything the threads held is freed: at most a few samples' worth stays.
    assert abs(r["residual"]) < 64 * r["mean"], r


def test_c_code_allocating_without_the_gil():
    r = run("gil_released")
    assert r == {"mode": 1, "results": 9, "taken": r["taken"]} and r["taken"] > 0


def test_fork_and_subprocess():
    r = run("fork")
    assert r["child_status"] == 0 and r["subprocess"] == "45" and r["mode"] == 1


def test_deep_recursion_and_exceptions():
    r = run("recursion")
    assert r == {"mode": 1, "held": 2000, "caught": 2000}


def test_fifty_million_allocations():
    r = run("stress", "50000000", timeout=600)
    assert r["mode"] == 1 and r["kept"]
    # Each iteration allocates an int (28 bytes) and the list's item array (8 bytes); the list
    # object itself comes from the free list. 100 million allocations in all.
    assert r["allocated"] >= 50_000_000 * 35, r  # (ints below 257 are cached)


def test_users_tracemalloc_started_before_ours():
    r = run("tracemalloc_before")
    assert r["epoch"] == 1 and r["hooked"] == [True, True]
    # After re-attaching, new blocks are measured again (20,000 x ~1 KiB).
    assert 0.8 * 20_000 * 1033 < r["grown"] < 1.2 * 20_000 * 1033, r


def test_users_tracemalloc_started_after_ours():
    r = run("tracemalloc_after")
    assert r["during"] == [False, False] and r["after"] == [True, True] and r["epoch"] == 0
    assert abs(r["native"] / r["tracemalloc"] - 1.0) < 0.1, r


def test_gc_storms():
    r = run("gc_storm")
    assert r["mode"] == 1 and r["collections"] >= 300


def test_interpreter_shutdown_with_the_hook_installed():
    r = run("shutdown")
    assert r["mode"] == 1


def test_sampling_every_allocation_exercises_the_reentry_path():
    r = run("every_allocation")
    assert r["mode"] == 1 and r["taken"] > 20_000 and r["held"] == 20_000


def test_tables_are_bounded_and_the_excess_counted():
    r = run("caps")
    assert r["overflowed"] > 0, r  # 5,000 distinct stacks > 4,096
    assert r["dropped"] > 0 and r["samples"] <= 65_536, r
    assert r["footprint"] < 4 << 20, r  # the sampler's own tables


def test_internal_failure_unhooks_and_stays_off():
    r = run("failure")
    assert r["mode"] == 2 and r["failures"] >= 1
    assert r["hooked"] == [False, False]
    assert r["restart"] is False and r["held"] == 10_000


@pytest.mark.parametrize("allocator", ["debug", "malloc", "pymalloc_debug"])
def test_chains_to_the_allocator_installed_before_it(allocator):
    # The debug hooks check every block's guard bytes and domain at free: a hook that
    # changed a block's layout or mixed domains up would abort the process here.
    for name in ("threads", "recursion", "tracemalloc_after", "gc_storm"):
        run(name, env={"PYTHONMALLOC": allocator})
