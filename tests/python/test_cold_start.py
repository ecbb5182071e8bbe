"""Cold starts pay no tracing tax: the first invocation of a process takes the cheap path unless
``trace_cold`` asks for a trace, and every other tracing reason stays within the budget."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, MiB, check_invocation
from lambda_memory_profiler import _sampling, memory_profile

RECORDS = 20_000

# The handler's first call parses 20k records into a module-level cache (a reference table
# loaded lazily, as many functions do); the later calls only read it.
APP = textwrap.dedent(
    """
    import json
    import sys
    import tracemalloc
    from pathlib import Path

    from lambda_memory_profiler import memory_profile

    DATA = Path(__file__).with_name("records.json")
    CACHE = {}


    def work(event, context):
        if "records" not in CACHE:
            CACHE["records"] = json.loads(DATA.read_text())
        return {"tracing": tracemalloc.is_tracing(), "n": len(CACHE["records"])}


    handler = memory_profile(**json.loads(sys.argv[1]))(work)
    print(json.dumps([handler({}, None) for _ in range(int(sys.argv[2]))]))
    """
)
PARSE_LINE = 1 + APP.splitlines().index('        CACHE["records"] = json.loads(DATA.read_text())')


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    d = tmp_path_factory.mktemp("cold")
    rng = random.Random(12)
    rows = [
        {
            "id": i,
            "sku": f"SKU-{i:06d}",
            "price": round(rng.uniform(1, 500), 2),
            "qty": rng.randint(1, 20),
            "tags": [rng.choice(["new", "sale", "eco", "gift"])],
        }
        for i in range(RECORDS)
    ]
    (d / "records.json").write_text(json.dumps(rows))
    (d / "app.py").write_text(APP)
    return d


def run_app(app, intake, opts: dict, calls: int = 3, env: dict | None = None):
    """Runs the handler ``calls`` times in a fresh process; its results and records."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("LMP_")}
    full.update(
        LMP_INTAKE_PORT=str(intake.port),
        PYTHONPATH=os.pathsep.join([str(ROOT / "layer" / "python"), str(app)]),
        **(env or {}),
    )
    p = subprocess.run(
        [sys.executable, str(app / "app.py"), json.dumps(opts), str(calls)],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    results = json.loads(p.stdout.strip().splitlines()[-1])
    recs = [intake.next() for _ in range(calls)]
    for r in recs:
        check_invocation(r)
    assert [r["cold_start"] for r in recs] == [True] + [False] * (calls - 1)
    assert all(res["n"] == RECORDS for res in results)
    return results, recs


def test_first_invocation_is_not_traced_by_default(app, intake):
    results, recs = run_app(app, intake, {})
    # Not only no trace in the record: tracemalloc never ran while the 20k records were parsed.
    assert results[0]["tracing"] is False
    assert recs[0]["trace"] is None
    # The cheap path's figures are all there on the cold start.
    assert recs[0]["heap_blocks"] > RECORDS and recs[0]["duration_ms"] > 0
    # A warm call may be traced for the budgeted reasons (the third one for the warm-up, when
    # nothing was traced before it); whatever ran under tracemalloc is in its record.
    assert all(r["tracing"] == (rec["trace"] is not None) for r, rec in zip(results, recs))
    assert all(
        rec["trace"]["reason"] in ("warmup", "rate", "suspect") for rec in recs[1:] if rec["trace"]
    )


@pytest.mark.parametrize("how", ["argument", "variable"])
def test_trace_cold_traces_the_first_invocation(app, intake, how):
    opts, env = ({"trace_cold": True}, None) if how == "argument" else ({}, {"LMP_TRACE_COLD": "1"})
    results, recs = run_app(app, intake, opts, env=env)
    # The warm calls may be sampled as usual (1%, and a first trace is taken on credit).
    assert results[0]["tracing"] is True
    assert all(r["tracing"] == (rec["trace"] is not None) for r, rec in zip(results, recs))
    t = recs[0]["trace"]
    assert t["reason"] == "cold" and t["mode"] == "own"
    # The parsed table stays in the cache: megabytes retained, named at the handler's line.
    assert t["retained_bytes"] > 2 * MiB, t
    assert (t["top"][0]["file"], t["top"][0]["line"]) == (str(app / "app.py"), PARSE_LINE)
    # Only the cold start: the warm calls are sampled as usual (1% within the budget).
    assert all(r["trace"] is None or r["trace"]["reason"] != "cold" for r in recs[1:])


def test_trace_cold_alone_traces_only_the_cold_start(app, intake):
    # sample_rate=0 turns sampling off, not the explicit request for the cold start.
    results, recs = run_app(app, intake, {"trace_cold": True, "sample_rate": 0.0}, calls=4)
    assert [r["tracing"] for r in results] == [True, False, False, False]
    assert recs[0]["trace"]["reason"] == "cold"
    assert [r["trace"] for r in recs[1:]] == [None, None, None]


def test_trace_false_wins_over_trace_cold(app, intake):
    results, recs = run_app(app, intake, {"trace_cold": True, "trace": False})
    assert [r["tracing"] for r in results] == [False, False, False]
    assert [r["trace"] for r in recs] == [None, None, None]


def test_sample_rate_one_traces_everything_the_cold_start_included(app, intake):
    _, recs = run_app(app, intake, {"sample_rate": 1.0})
    assert [r["trace"]["reason"] for r in recs] == ["always"] * 3


def test_an_eager_sample_rate_still_spares_the_cold_start(app, intake):
    # A draw below the rate nearly always, but the budget cannot price a trace before one
    # untraced warm invocation was measured: the cold start and the call after it are cheap.
    # The third is traced, taken on credit, as the warm-up trace (nothing was traced before it).
    results, recs = run_app(app, intake, {"sample_rate": 0.9999999}, calls=3)
    assert [r["tracing"] for r in results] == [False, False, True]
    assert [r["trace"] and r["trace"]["reason"] for r in recs] == [None, None, "warmup"]


def _episodic_leak(intake, budget_us: float, episodes: int = 10) -> list[str | None]:
    """A handler that leaks ~300 blocks per call for 16 calls, then holds still for 16, over
    and over: each episode of growth is suspected anew. The trace reasons, one per call."""
    kept: list = []
    phase = {"call": 0}

    @memory_profile(
        sample_rate=1e-12,
        suspect_window=4,
        trace_budget_us=budget_us,
        intake_port=intake.port,
        native=False,  # the pure-Python path: with the sampler there is no suspect mode
    )
    def handler(event, context):
        phase["call"] += 1
        churn = [{"k": i, "v": str(i)} for i in range(2000)]  # what tracing makes expensive
        if (phase["call"] // 16) % 2 == 0:
            kept.append(churn[:300])
        return None

    reasons = []
    for _ in range(32 * episodes):
        handler({}, None)
        t = intake.next()["trace"]
        reasons.append(t and t["reason"])
    kept.clear()
    return reasons


def test_suspect_traces_never_exceed_the_budget(intake, monkeypatch):
    # Count the heap at every invocation, however large the test process's heap has become.
    monkeypatch.setattr(_sampling, "HEAP_BLOCKS_BUDGET_S", 1.0)
    # Without a budget, every episode of growth is traced (the control: suspect mode fires).
    free = _episodic_leak(intake, budget_us=0)
    assert set(free) <= {None, "warmup", "suspect"}, free
    assert free.count("suspect") >= 8, free
    # With a tiny budget the same handler earns 1 µs (or 2% of an untraced call) per call, and
    # one trace of it costs several untraced calls: the first trace is taken on credit, then
    # the 320 calls' credit covers at most a few more, whatever the machine's speed.
    tight = _episodic_leak(intake, budget_us=1)
    assert set(tight) <= {None, "warmup", "suspect"}, tight
    assert 1 <= tight.count("warmup") + tight.count("suspect") <= 4, tight
