"""Memory figures measured on real handlers: retention, growth, peaks, gc, peak RSS."""

from __future__ import annotations

import collections
import functools
import gc
import statistics

from conftest import MiB, check_invocation
from lambda_memory_profiler import memory_profile


def test_leak_of_10_mib_per_call_is_retention_and_growth(intake):
    kept = []

    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        kept.append(b"L" * (10 * MiB))  # the leaking line
        return {"n": len(kept)}

    line = handler.__wrapped__.__code__.co_firstlineno + 2
    recs = []
    for _ in range(6):
        handler({}, None)
        recs.append(intake.next())
    for rec in recs:
        check_invocation(rec)
        t = rec["trace"]
        assert t["reason"] == "always" and t["mode"] == "own"
        assert abs(t["retained_bytes"] - 10 * MiB) <= 0.05 * 10 * MiB, t
        assert abs(t["growth_bytes"] - 10 * MiB) <= 0.05 * 10 * MiB, t
        assert t["peak_bytes"] >= 10 * MiB
        top = t["top"][0]
        assert top["file"] == __file__ and top["line"] == line, t["top"]
        assert top["size"] >= 10 * MiB
    # The net block counter rises during every call (between calls, the test's own garbage
    # may be collected, so the end-of-call counts alone need not rise).
    assert all(r["trace"]["heap_blocks_delta"] >= 1 for r in recs), recs
    total = sum(r["trace"]["growth_bytes"] for r in recs)
    assert abs(total - 60 * MiB) <= 0.05 * 60 * MiB
    kept.clear()


def test_transient_50_mib_is_peak_without_growth(intake):
    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        block = b"T" * (50 * MiB)  # touched pages: RSS really rises
        n = len(block)
        del block
        return n

    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def quiet(event, context):
        return sum(range(100))

    handler({}, None)
    rec = intake.next()
    check_invocation(rec)
    t = rec["trace"]
    assert abs(t["peak_bytes"] - 50 * MiB) <= 0.05 * 50 * MiB, t
    assert t["retained_bytes"] < 64 * 1024, t
    assert abs(t["growth_bytes"]) < 64 * 1024, t
    big_peak = rec["rss_peak_bytes"]
    assert big_peak >= 50 * MiB
    quiet({}, None)
    after = intake.next()
    if after["rss_peak_scope"] == "invocation":
        # The high-water mark was reset: the quiet invocation does not inherit the 50 MiB.
        assert after["rss_peak_bytes"] < big_peak - 40 * MiB, (big_peak, after)
    else:
        assert after["rss_peak_bytes"] >= big_peak


def _steady_growth(intake, handler, warm: int, measured: int):
    for i in range(warm):
        handler(i, None)
        intake.next()
    recs = []
    for i in range(warm, warm + measured):
        handler(i, None)
        recs.append(intake.next())
    return recs


def test_bounded_lru_at_steady_state_shows_retention_but_no_growth(intake):
    cache: collections.OrderedDict = collections.OrderedDict()
    entry = 64 * 1024

    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        cache[f"key-{event}"] = bytes(entry)
        if len(cache) > 32:
            cache.popitem(last=False)
        return None

    recs = _steady_growth(intake, handler, warm=64, measured=40)
    retained = [r["trace"]["retained_bytes"] for r in recs]
    growth = [r["trace"]["growth_bytes"] for r in recs]
    # Each call keeps a new 64 KiB entry (gross retention) ...
    assert min(retained) >= entry, retained
    # ... but evicts an old one: the net growth is nil.
    assert statistics.median(growth) == 0, growth
    assert abs(sum(growth)) < entry, growth
    assert all(r["trace"]["heap_blocks_delta"] <= 0 for r in recs[1:]), recs


def test_functools_lru_cache_at_steady_state_shows_no_growth(intake):
    @functools.lru_cache(maxsize=16)
    def render(key):
        return (str(key) * 8192).encode()

    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        return len(render(event))

    recs = _steady_growth(intake, handler, warm=40, measured=40)
    growth = [r["trace"]["growth_bytes"] for r in recs]
    assert min(r["trace"]["retained_bytes"] for r in recs) >= 8192
    assert statistics.median(growth) == 0, growth
    assert abs(sum(growth)) < 8192 * 2, growth


def test_leak_beside_a_bounded_cache_is_still_growth(intake):
    cache: collections.OrderedDict = collections.OrderedDict()
    leak = []

    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        cache[event] = bytes(32 * 1024)
        if len(cache) > 8:
            cache.popitem(last=False)
        leak.append(bytearray(b"x" * MiB))
        return None

    recs = _steady_growth(intake, handler, warm=20, measured=20)
    growth = [r["trace"]["growth_bytes"] for r in recs]
    assert abs(statistics.median(growth) - MiB) <= 0.05 * MiB, growth
    leak.clear()


def test_reference_cycles_are_counted_as_collected(intake):
    class Node:
        def __init__(self):
            self.me = self

    @memory_profile(trace=False, intake_port=intake.port)
    def handler(event, context):
        for _ in range(500):
            Node()
        gc.collect()
        return None

    handler({}, None)
    rec = intake.next()
    check_invocation(rec)
    assert rec["trace"] is None
    assert rec["gc"]["collections"] >= 1
    # 500 instances, each with its __dict__.
    assert rec["gc"]["collected"] >= 500, rec["gc"]
    assert rec["gc"]["uncollectable"] == 0
    assert rec["gc"]["garbage"] == len(gc.garbage)


def test_no_collection_reports_zero(intake):
    @memory_profile(trace=False, intake_port=intake.port)
    def handler(event, context):
        return 1 + 1

    gc.collect()
    handler({}, None)
    rec = intake.next()
    assert rec["gc"]["collections"] == 0 and rec["gc"]["collected"] == 0


def test_deeper_tracebacks_name_the_functions_own_line(intake):
    import json

    body = json.dumps([{"id": i, "name": f"item-{i}"} for i in range(200)])
    kept = []

    def make(frames):
        @memory_profile(sample_rate=1.0, frames=frames, intake_port=intake.port)
        def handler(event, context):
            kept.append(json.loads(event))  # the leaking line
            return None

        return handler

    shallow, deep = make(1), make(8)
    shallow(body, None)
    top_shallow = intake.next()["trace"]["top"][0]
    deep(body, None)
    rec = intake.next()
    top_deep = rec["trace"]["top"][0]
    line = deep.__wrapped__.__code__.co_firstlineno + 2
    # One frame: the allocating line itself, inside the json package.
    assert top_shallow["file"].endswith("decoder.py"), top_shallow
    # Eight frames: the newest frame in the function's own code.
    assert top_deep["file"] == __file__ and top_deep["line"] == line, top_deep
    assert top_deep["count"] >= 200
    assert abs(rec["trace"]["growth_bytes"] - rec["trace"]["retained_bytes"]) < 1024
    kept.clear()


def test_a_large_response_is_retention_but_not_growth(intake):
    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        items = [{"id": i, "name": f"item-{i}", "tags": ["a", str(i)]} for i in range(300)]
        return {"statusCode": 200, "items": items, "body": "x" * 5000}

    for _ in range(3):
        out = handler({}, None)
        t = intake.next()["trace"]
        # The response is live at the end (the runtime still has to send it) ...
        assert t["retained_bytes"] > 60_000, t
        # ... but the runtime frees it right after: it is not growth (up to the small dict
        # tables that may come from CPython's free list: at most 80 of them, ~200 bytes each).
        assert abs(t["growth_bytes"]) < 80 * 200, t
        assert len(out["items"]) == 300


def test_garbage_list_and_duration_are_reported(intake):
    import time

    class Node:
        def __init__(self):
            self.me = self

    @memory_profile(trace=False, intake_port=intake.port)
    def handler(event, context):
        gc.set_debug(gc.DEBUG_SAVEALL)  # collected objects go to gc.garbage instead
        try:
            for _ in range(50):
                Node()
            gc.collect()
        finally:
            gc.set_debug(0)
        time.sleep(0.05)
        return None

    try:
        handler({}, None)
        rec = intake.next()
        assert rec["gc"]["garbage"] >= 50, rec["gc"]
        assert rec["gc"]["garbage"] == len(gc.garbage)
        assert 50 <= rec["duration_ms"] < 30_000
    finally:
        gc.garbage.clear()
