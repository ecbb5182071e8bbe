"""The decorator's contract with the handler: transparency, robustness, tracing etiquette."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import traceback
import tracemalloc

import lambda_memory_profiler
import pytest
from conftest import ROOT, MiB, check_invocation
from lambda_memory_profiler import _heap, _probes, _sampling, memory_profile


class Boom(Exception):
    pass


class Context:
    aws_request_id = "c0ffee00-1b7a-4f0a-9c55-3b1c7a0e2d11"


def test_exception_propagates_unchanged_and_is_recorded(intake):
    raised = []

    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        err = Boom("bad input")
        raised.append(err)
        raise err

    with pytest.raises(Boom) as info:
        handler({}, Context())
    assert info.value is raised[0]
    assert info.value.args == ("bad input",)
    # The traceback still ends at the handler's raise statement.
    last = traceback.extract_tb(info.value.__traceback__)[-1]
    assert last.name == "handler" and last.line == "raise err"
    assert not tracemalloc.is_tracing()
    rec = intake.next()
    check_invocation(rec)
    assert rec["error_type"] == "Boom"
    assert rec["request_id"] == Context.aws_request_id
    assert rec["trace"] is not None


def test_base_exceptions_propagate_too(intake):
    @memory_profile(trace=False, intake_port=intake.port)
    def handler(event, context):
        raise SystemExit(3)

    with pytest.raises(SystemExit) as info:
        handler({}, None)
    assert info.value.code == 3
    assert intake.next()["error_type"] == "SystemExit"


def test_return_value_is_the_same_object(intake):
    response = {"statusCode": 200, "body": "x" * 1000}

    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        return response

    assert handler({}, None) is response
    assert intake.next()["error_type"] is None


def test_metadata_and_keyword_context_survive(intake):
    @memory_profile(trace=False, intake_port=intake.port)
    def handler(event, context=None):
        """Doc."""
        return context

    assert handler.__name__ == "handler" and handler.__doc__ == "Doc."
    assert handler.__wrapped__.__name__ == "handler"
    ctx = Context()
    assert handler({}, context=ctx) is ctx
    assert intake.next()["request_id"] == Context.aws_request_id


def test_local_call_without_context(intake):
    @memory_profile(trace=False, intake_port=intake.port)
    def handler(event):
        return event * 2

    assert handler(21) == 42
    rec = intake.next()
    check_invocation(rec)
    assert rec["request_id"] == ""


def test_nested_decorators_measure_once(intake):
    def other(fn):
        @functools.wraps(fn)
        def inner(*a, **k):
            return ("other", fn(*a, **k))

        return inner

    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    @other
    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        return bytes(1000)

    out = handler({}, None)
    assert out[0] == "other" and len(out[1]) == 1000
    rec = intake.next()
    check_invocation(rec)
    assert intake.pending() == 0  # one record per invocation, not one per layer
    assert not tracemalloc.is_tracing()


def test_trace_false_never_starts_tracemalloc(intake):
    seen = []

    @memory_profile(trace=False, sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        seen.append(tracemalloc.is_tracing())
        return None

    for _ in range(3):
        handler({}, None)
        assert intake.next()["trace"] is None
    assert seen == [False, False, False]


def test_sample_rate_zero_gives_the_cheap_path_only(intake):
    @memory_profile(sample_rate=0.0, intake_port=intake.port)
    def handler(event, context):
        return tracemalloc.is_tracing()

    assert [handler({}, None) for _ in range(5)] == [False] * 5
    assert all(intake.next()["trace"] is None for _ in range(5))


def test_tracing_only_during_a_traced_invocation(intake):
    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        return tracemalloc.is_tracing()

    assert handler({}, None) is True
    assert not tracemalloc.is_tracing()
    assert intake.next()["trace"]["mode"] == "own"


def test_users_tracemalloc_session_is_left_alone(intake):
    keep = []

    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        keep.append(b"u" * (2 * MiB))
        return None

    tracemalloc.start(5)
    try:
        early = [b"e" * MiB]
        _, peak_before = tracemalloc.get_traced_memory()
        handler({}, None)
        assert tracemalloc.is_tracing()
        assert tracemalloc.get_traceback_limit() == 5
        current, peak_after = tracemalloc.get_traced_memory()
        assert peak_after >= peak_before and current >= 3 * MiB
        # The earlier block is still traced: nothing was reset.
        assert tracemalloc.get_object_traceback(early[0]) is not None
    finally:
        tracemalloc.stop()
    rec = intake.next()
    check_invocation(rec)
    t = rec["trace"]
    assert t["mode"] == "shared" and t["retained_blocks"] is None
    assert abs(t["growth_bytes"] - 2 * MiB) <= 0.05 * 2 * MiB, t
    keep.clear()


def test_handler_stopping_tracemalloc_does_not_break_anything(intake):
    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        tracemalloc.stop()
        return "ok"

    assert handler({}, None) == "ok"
    rec = intake.next()
    check_invocation(rec)
    assert rec["trace"] is None  # the trace was lost, the record was not


def test_failing_measurement_never_reaches_the_handler(intake, monkeypatch):
    def broken():
        raise OSError("probe failed")

    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        return "fine"

    before = lambda_memory_profiler.stats()["measurement_errors"]
    monkeypatch.setattr(_sampling, "_blocks", broken)
    monkeypatch.setattr(_probes, "heap_blocks", broken)
    assert handler({}, None) == "fine"
    assert lambda_memory_profiler.stats()["measurement_errors"] > before
    assert not tracemalloc.is_tracing()


def test_suspected_growth_traces_more_often_but_bounded(intake, monkeypatch):
    # Count the heap at every invocation, however large the test process's heap has become.
    monkeypatch.setattr(_sampling, "HEAP_BLOCKS_BUDGET_S", 1.0)
    kept = []

    # No budget: this test is about when suspect mode traces (the budget has its own test).
    @memory_profile(
        sample_rate=1e-12,
        suspect_window=4,
        trace_budget_us=0,
        intake_port=intake.port,
        native=False,
    )
    def handler(event, context):
        kept.append([bytearray(512) for _ in range(16)])
        return None

    reasons = []
    for _ in range(100):
        handler({}, None)
        t = intake.next()["trace"]
        reasons.append(t and t["reason"])
    traced = [i for i, r in enumerate(reasons) if r]
    assert traced and all(reasons[i] == "suspect" for i in traced), reasons
    assert traced[0] >= 4  # needs a full window of rising memory first
    gaps = [b - a for a, b in zip(traced, traced[1:])]
    assert all(g >= _sampling.SUSPECT_INTERVAL for g in gaps), traced
    # A few traces name the sites; an episode of growth is not traced throughout.
    assert 2 <= len(traced) <= _sampling.SUSPECT_TRACES_PER_EPISODE, traced
    kept.clear()


def test_suspect_traces_obey_the_budget(intake, monkeypatch):
    monkeypatch.setattr(_sampling, "HEAP_BLOCKS_BUDGET_S", 1.0)
    kept = []

    @memory_profile(
        sample_rate=1e-12,
        suspect_window=4,
        trace_budget_us=20,
        intake_port=intake.port,
        native=False,
    )
    def handler(event, context):
        kept.append([str(i) for i in range(300)])  # ~300 blocks kept: steady growth
        return None

    traced = 0
    n = 400
    for _ in range(n):
        handler({}, None)
        t = intake.next()["trace"]
        traced += t is not None and t["reason"] in ("warmup", "suspect")
    kept.clear()
    # Suspected all along, but each trace costs far more than 20 µs per invocation earns (the
    # warm-up trace, the first, is taken on credit and repaid like the others).
    assert 1 <= traced < n // _sampling.SUSPECT_INTERVAL // 2, traced


def test_runtime_drift_is_not_suspected(intake, monkeypatch):
    # One small block kept per invocation: what the runtime client itself keeps.
    monkeypatch.setattr(_sampling, "HEAP_BLOCKS_BUDGET_S", 1.0)
    kept = []

    @memory_profile(
        sample_rate=1e-12,
        suspect_window=4,
        trace_budget_us=0,
        intake_port=intake.port,
        native=False,
    )
    def handler(event, context):
        kept.append(object())
        return None

    handler({}, None)
    intake.next()
    for _ in range(60):
        handler({}, None)
        trace = intake.next()["trace"]
        assert trace is None or trace["reason"] == "warmup", trace["reason"]
    kept.clear()


def test_steady_handler_is_not_suspected(intake):
    @memory_profile(sample_rate=1e-12, suspect_window=4, intake_port=intake.port)
    def handler(event, context):
        return sum(len(str(i)) for i in range(200))

    for _ in range(30):
        handler({}, None)
        trace = intake.next()["trace"]
        assert trace is None or trace["reason"] == "warmup", trace


def test_disable_returns_the_function_itself(lmp_env):
    def handler(event, context):
        return 1

    lmp_env.setenv("LMP_DISABLE", "true")
    assert memory_profile(handler) is handler
    assert memory_profile(disable=False, trace=False)(handler) is not handler


def test_cold_start_is_the_first_invocation_of_the_process(intake):
    code = f"""
import sys
sys.path.insert(0, {str(ROOT / "layer" / "python")!r})
from lambda_memory_profiler import memory_profile

@memory_profile
def handler(event, context):
    return event

@memory_profile
def other(event, context):
    return event

for i in range(3):
    handler(i, None)
other(0, None)
"""
    env = dict(os.environ, LMP_INTAKE_PORT=str(intake.port))
    env.pop("LMP_SAMPLE_RATE", None)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
    recs = [intake.next() for _ in range(4)]
    for r in recs:
        check_invocation(r)
    assert [r["cold_start"] for r in recs] == [True, False, False, False]
    assert recs[0]["trace"] is None  # no cold-start trace by default (test_cold_start.py)
    assert len(intake.hellos) == 1
    hello = intake.hellos[0]
    assert hello["pid"] == recs[0]["pid"] != os.getpid()
    assert hello["runtime"] == f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert hello["agent"] == f"lambda_memory_profiler/{lambda_memory_profiler.__version__}"
    assert set(hello) == {"v", "kind", "pid", "runtime", "agent"}


def test_records_are_valid_json_datagrams(intake):
    @memory_profile(sample_rate=1.0, top=3, intake_port=intake.port)
    def handler(event, context):
        return [str(i) * 100 for i in range(50)]

    handler({}, Context())
    rec = intake.next()
    check_invocation(rec)
    assert len(rec["trace"]["top"]) <= 3
    assert rec["pid"] == os.getpid()
    json.dumps(rec, allow_nan=False)


def test_tracing_budget_lowers_the_effective_sample_rate(intake):
    @memory_profile(sample_rate=0.5, trace_budget_us=1.0, intake_port=intake.port)
    def handler(event, context):
        # Allocation-heavy: tracing makes it several times slower.
        return len([{"i": i, "s": str(i)} for i in range(2000)])

    traced = 0
    for _ in range(300):
        handler({}, None)
        traced += intake.next()["trace"] is not None
    # Without the budget about 150 of 300 would be traced; with it, a handful.
    assert 1 <= traced < 40, traced


def test_sample_rate_zero_skips_even_the_cold_start_trace(intake):
    code = f"""
import sys
sys.path.insert(0, {str(ROOT / "layer" / "python")!r})
from lambda_memory_profiler import memory_profile

@memory_profile(sample_rate=0)
def handler(event, context):
    import tracemalloc
    return tracemalloc.is_tracing()

assert handler(0, None) is False
"""
    env = dict(os.environ, LMP_INTAKE_PORT=str(intake.port))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
    rec = intake.next()
    assert rec["cold_start"] is True and rec["trace"] is None


def test_shared_mode_shrinking_heap_keeps_sizes_non_negative(intake):
    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        event.clear()  # frees blocks traced by the user's session before the call
        return None

    tracemalloc.start()
    try:
        big = {"payload": [bytes(1000) for _ in range(1000)]}
        handler(big, None)
    finally:
        tracemalloc.stop()
    t = intake.next()["trace"]
    assert t["mode"] == "shared"
    assert t["retained_bytes"] == 0
    assert t["growth_bytes"] < -900_000, t


def test_heap_block_count_is_thinned_out_when_it_gets_expensive(intake, monkeypatch):
    # Any real cost exceeds this budget, so the count is taken every 16th invocation only.
    monkeypatch.setattr(_sampling, "HEAP_BLOCKS_BUDGET_S", 1e-12)

    @memory_profile(trace=False, intake_port=intake.port)
    def handler(event, context):
        return None

    blocks = []
    for _ in range(40):
        handler({}, None)
        blocks.append(intake.next()["heap_blocks"])
    measured = [i for i, b in enumerate(blocks) if b is not None]
    assert measured == [0, 16, 32], blocks
    assert all(isinstance(blocks[i], int) and blocks[i] > 1000 for i in measured)


@pytest.mark.parametrize("native", [True, False])
def test_the_warm_up_trace_is_the_third_invocation_with_the_sampler_only(intake, native):
    # With the sampler running (no suspect mode), the third invocation is traced once so that
    # the first trace's one-off step falls in the extension's leak warm-up; without it, never.
    @memory_profile(sample_rate=1e-12, intake_port=intake.port, native=native)
    def handler(event, context):
        return [str(i) for i in range(100)]

    reasons = []
    for _ in range(30):
        handler({}, None)
        t = intake.next()["trace"]
        reasons.append(t and t["reason"])
    with_sampler = native and _heap.sampling()
    if native and os.environ.get("LMP_REQUIRE_NATIVE"):
        assert with_sampler, "the native module is present"
    expected = ["warmup" if with_sampler and i == 2 else None for i in range(30)]
    assert reasons == expected
