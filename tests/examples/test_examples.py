"""The examples leak (or not) as documented: measured with tracemalloc around the plain handler.

Each test loads a fresh copy of the example module (fresh module state, as in a new execution
environment), calls the undecorated handler with the example's own simulated events and compares
the traced memory after call 25 and after call 50: a leaky handler keeps growing, its fixed twin
has reached its bounds by then.
"""

from __future__ import annotations

import gc
import importlib.util
import itertools
import os
import sys
import tracemalloc
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(ROOT / "layer" / "python"))

# (example, module holding sample_event): the simulated event source of each example.
CASES = [
    ("log_aggregator", "log_source"),
    ("param_store", "ssm_stub"),
    ("pod_watcher", "k8s_events"),
]
CALLS = 50
# Smallest leak per invocation the leaky twins must show; each leaks tens of KB or more per call.
MIN_LEAK_PER_CALL = 10 * 1024
# What a fixed twin may still move between call 25 and call 50 (allocator noise, dict resizes).
FIXED_SLACK = 64 * 1024

_fresh = itertools.count()


def load(example: str, variant: str):
    """A new instance of examples/<example>/<variant>.py with its own module state."""
    folder = EXAMPLES / example
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    name = f"_example_{example}_{variant}_{next(_fresh)}"
    spec = importlib.util.spec_from_file_location(name, folder / f"{variant}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plain(handler):
    """The handler without the profiling decorator, whose own tracing would interfere."""
    return getattr(handler, "__wrapped__", handler)


@pytest.fixture(autouse=True)
def spool_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOOL_DIR", str(tmp_path / "spool"))
    return tmp_path / "spool"


def traced_growth(module, source: str) -> tuple[int, int, list]:
    """Traced bytes at call 25 and call 50, and the handler's results."""
    events = sys.modules[source].sample_event
    handler = plain(module.handler)
    marks, results = {}, []
    tracemalloc.start()
    try:
        for seq in range(1, CALLS + 1):
            results.append(handler(events(seq), None))
            if seq in (CALLS // 2, CALLS):
                gc.collect()
                marks[seq] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return marks[CALLS // 2], marks[CALLS], results


def close_spools(module) -> None:
    for handle in getattr(module, "_spools", {}).values():
        handle.close()


@pytest.mark.parametrize(("example", "source"), CASES)
def test_leaky_handler_keeps_growing(example, source):
    module = load(example, "leaky")
    try:
        mid, end, _ = traced_growth(module, source)
    finally:
        close_spools(module)
    growth = end - mid
    print(f"{example}/leaky: +{growth} bytes over calls {CALLS // 2 + 1}..{CALLS}")
    assert growth > (CALLS // 2) * MIN_LEAK_PER_CALL


@pytest.mark.parametrize(("example", "source"), CASES)
def test_fixed_handler_stays_bounded(example, source):
    module = load(example, "fixed")
    mid, end, _ = traced_growth(module, source)
    growth = end - mid
    print(f"{example}/fixed: {growth:+} bytes over calls {CALLS // 2 + 1}..{CALLS}")
    assert growth < FIXED_SLACK


@pytest.mark.parametrize("variant", ["leaky", "fixed"])
@pytest.mark.parametrize(("example", "source"), CASES)
def test_handlers_generate_their_own_events_when_called_empty(example, source, variant):
    """A scheduler or a load loop can drive the examples with `{}`: batch N on the Nth call."""
    module = load(example, variant)
    handler = plain(module.handler)
    try:
        first = [handler({}, None) for _ in range(3)]
    finally:
        close_spools(module)
    again = load(example, variant)
    try:
        explicit = [plain(again.handler)({"seq": n}, None) for n in (1, 2, 3)]
    finally:
        close_spools(again)
    assert first == explicit


def test_twins_compute_the_same_results():
    """The fixes change memory, not answers (except the leaky alert list, which is the bug)."""
    leaky_logs = load("log_aggregator", "leaky")
    fixed_logs = load("log_aggregator", "fixed")
    try:
        _, _, leaky = traced_growth(leaky_logs, "log_source")
    finally:
        close_spools(leaky_logs)
    _, _, fixed = traced_growth(fixed_logs, "log_source")
    for a, b in zip(leaky, fixed):
        assert (a["events"], a["per_service"]) == (b["events"], b["per_service"])
    # The mutable default argument makes the leaky alert count cumulative across invocations.
    assert [r["alerts"] for r in leaky] == list(itertools.accumulate(r["alerts"] for r in fixed))
    # Deleted streams are evicted only by the fixed twin; the leaky one merely flags them.
    assert fixed[-1]["streams"] <= 2 < len(leaky_logs._streams)

    _, _, leaky = traced_growth(load("param_store", "leaky"), "ssm_stub")
    _, _, fixed = traced_growth(load("param_store", "fixed"), "ssm_stub")
    assert [r["sent"] for r in leaky] == [r["sent"] for r in fixed]

    _, _, leaky = traced_growth(load("pod_watcher", "leaky"), "k8s_events")
    _, _, fixed = traced_growth(load("pod_watcher", "fixed"), "k8s_events")
    assert [r["alerts"] for r in leaky] == [r["alerts"] for r in fixed]
    assert any(r["alerts"] for r in fixed)


def test_leaky_log_aggregator_leaks_file_descriptors(spool_dir):
    """Real descriptors in /proc/self/fd: one per stream for the leaky twin, none for the fix."""

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    for variant, expect_leak in (("leaky", True), ("fixed", False)):
        module = load("log_aggregator", variant)
        handler = plain(module.handler)
        before = fds()
        try:
            for seq in range(1, 21):
                handler(sys.modules["log_source"].sample_event(seq), None)
            opened = fds() - before
        finally:
            close_spools(module)
        assert (opened >= 20) if expect_leak else (opened == 0), (variant, opened)
    # The fix also removes the spool files of deleted streams.
    assert len(list(spool_dir.iterdir())) <= 2
