"""Time added per call by memory decorators on an allocation-heavy handler.

One process, interleaved rounds: every round runs each variant for the same number of calls in
a shuffled order, so drift of the machine (other processes, frequency) hits all variants alike.
The added time of a variant in a round is its mean call time minus the undecorated handler's in
that round; the table gives the median and the mean of those over the rounds.

    python bench/decorator_overhead.py [--rounds 30] [--block-ms 250] [--clock cpu|wall]

``--frames-sweep`` measures instead what a traced call costs for each traceback depth
(``LMP_TRACE_FRAMES``), on the handler above and on one parsing ~50 KiB of JSON, both called
from 12 frames deep (the runtime client's stack below a Lambda handler).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import random
import socket
import statistics
import sys
import time
import timeit
import tracemalloc
from typing import Any, Callable

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "layer", "python"))

from lambda_memory_profiler import memory_profile, stats  # noqa: E402
from lambda_memory_profiler._config import DEFAULT_SAMPLE_RATE  # noqa: E402

Handler = Callable[[Any, Any], Any]


def make_body(n: int = 300) -> str:
    rng = random.Random(7)
    cats = ["books", "games", "garden", "kitchen", "music", "sports", "toys"]
    rows = [
        {
            "id": i,
            "category": rng.choice(cats),
            "price": round(rng.uniform(1, 500), 2),
            "qty": rng.randint(1, 20),
            "tags": [rng.choice(["new", "sale", "eco", "gift", "bulk"])],
            "country": rng.choice(["DE", "FR", "US"]),
        }
        for i in range(n)
    ]
    return json.dumps({"orders": rows})


def handler(event: Any, context: Any) -> Any:
    """Parses ~300 orders and aggregates them: typical API-style allocation churn."""
    orders = json.loads(event["body"])["orders"]
    totals: dict = {}
    countries: dict = {}
    for o in orders:
        c = totals.setdefault(o["category"], {"revenue": 0.0, "units": 0, "tags": set()})
        c["revenue"] += o["price"] * o["qty"]
        c["units"] += o["qty"]
        c["tags"].update(o["tags"])
        k = o["country"]
        countries[k] = countries.get(k, 0) + 1
    summary = {
        name: {"revenue": round(v["revenue"], 2), "units": v["units"], "tags": sorted(v["tags"])}
        for name, v in totals.items()
    }
    return {"statusCode": 200, "body": json.dumps({"totals": summary, "countries": countries})}


SWEEP_DEPTHS = (1, 4, 8, 12, 16, 32)
# Line-table entries before the call in each of the 12 frames below the handler: those of
# awslambdaric's bootstrap (handle_event_request, run, main, <module>, and runpy's two frames)
# on Python 3.11, twice over for a framework's frames. It matters: at every traced allocation,
# tracemalloc computes the line number of each captured frame by walking its line table up to
# the current instruction.
RUNTIME_STACK = (29, 175, 58, 38, 51, 81) * 2


def json_handler(event: Any, context: Any) -> Any:
    """Parses a ~50 KiB JSON body: most allocations happen three frames inside json."""
    return {"statusCode": 200, "n": len(json.loads(event["body"])["orders"])}


def below_runtime_stack(fn: Handler) -> Handler:
    """Calls ``fn`` from under ``RUNTIME_STACK`` Python frames, as a runtime's bootstrap does."""
    call = fn
    for i, entries in enumerate(RUNTIME_STACK):
        # Two line-table entries per such statement (its load and its store).
        body = "".join(f"    v{k} = {k} + 1\n" for k in range(entries // 2))
        src = f"def frame_{i}(event, context):\n{body}    return inner(event, context)\n"
        scope: dict = {"inner": call}
        exec(compile(src, f"/var/runtime/frame_{i}.py", "exec"), scope)
        call = scope[f"frame_{i}"]
    return call


def frames_sweep(rounds: int, block_ms: float, clock: Callable[[], float], drain: Any) -> int:
    """Median µs per call of each traceback depth, every call traced (no budget), against
    the same handler decorated without tracing; interleaved rounds as in the main table."""
    cases = {
        "allocation-heavy (300 orders)": (handler, {"body": make_body()}),
        "json.loads ~50 KiB": (json_handler, {"body": make_body(533)}),
    }
    print(
        f"Python {platform.python_version()}, {clock.__name__}, {rounds} interleaved rounds of "
        f"~{block_ms:.0f} ms per variant, handlers called from {len(RUNTIME_STACK)} frames deep, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    print()
    print(
        "| handler | body | untraced µs | "
        + " | ".join(f"frames={n} µs" for n in SWEEP_DEPTHS)
        + " |"
    )
    print("|---|---:|---:|" + "---:|" * len(SWEEP_DEPTHS))
    for label, (fn, event) in cases.items():
        variants = {"untraced": below_runtime_stack(memory_profile(trace=False)(fn))}
        for n in SWEEP_DEPTHS:
            traced = memory_profile(sample_rate=1.0, trace_budget_us=0, frames=n)(fn)
            variants[f"frames={n}"] = below_runtime_stack(traced)
        calls = {}
        for name, call in variants.items():
            t0 = time.perf_counter()
            for _ in range(5):
                call(event, None)
            calls[name] = max(5, int(block_ms / 1000 / ((time.perf_counter() - t0) / 5)))
        drain()
        per_round: dict = {name: [] for name in variants}
        names = list(variants)
        order_rng = random.Random(2)
        for _ in range(rounds):
            order_rng.shuffle(names)
            for name in names:
                call, n_calls = variants[name], calls[name]
                t0 = clock()
                for _ in range(n_calls):
                    call(event, None)
                per_round[name].append((clock() - t0) / n_calls * 1e6)
                drain()
        cells = " | ".join(f"{statistics.median(per_round[n]):.0f}" for n in variants)
        print(f"| {label} | {len(event['body']) / 1024:.0f} KiB | {cells} |")
    print()
    print("µs per call, median over the rounds; every call of a frames=N variant is traced.")
    return 0


def tutorial_decorator(fn: Handler) -> Handler:
    """The widely copied tracemalloc decorator: trace, two snapshots, compare, print, stop."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        result = fn(*args, **kwargs)
        after = tracemalloc.take_snapshot()
        diff = after.compare_to(before, "lineno")
        print("[ Top 10 memory differences ]")
        for line in diff[:10]:
            print(line)
        current, peak = tracemalloc.get_traced_memory()
        print(f"Current: {current / 2**20:.2f} MiB, peak: {peak / 2**20:.2f} MiB")
        tracemalloc.stop()
        return result

    return wrapper


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument(
        "--block-ms",
        type=float,
        default=250.0,
        help="time per variant per round: cheap variants get more calls, so that every round "
        "of the sampled variant holds traced calls",
    )
    ap.add_argument(
        "--ballast",
        type=int,
        default=0,
        help="live objects to keep during the run (a larger heap: sys.getallocatedblocks() "
        "walks the allocator's pools)",
    )
    ap.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: this thread's CPU time (robust to other processes on the machine); "
        "wall: elapsed time",
    )
    ap.add_argument(
        "--frames-sweep",
        action="store_true",
        help="time a traced call for each traceback depth instead (LMP_TRACE_FRAMES)",
    )
    a = ap.parse_args()
    clock = time.thread_time if a.clock == "cpu" else time.perf_counter
    load0 = os.getloadavg()
    ballast = [{"i": i} for i in range(a.ballast)]

    # An intake socket standing in for the extension; drained between timed blocks.
    intake = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    intake.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    intake.bind(("127.0.0.1", 0))
    intake.setblocking(False)
    port = intake.getsockname()[1]
    os.environ["LMP_INTAKE_PORT"] = str(port)

    def drain() -> tuple[int, int]:
        """(invocation records, traced ones) received since the last call."""
        n = traced = 0
        try:
            while True:
                rec = json.loads(intake.recv(65536))
                if rec.get("kind") == "invocation":
                    n += 1
                    traced += rec.get("trace") is not None
        except BlockingIOError:
            pass
        return n, traced

    if a.frames_sweep:
        return frames_sweep(a.rounds, a.block_ms, clock, drain)

    names_defaults = f"@memory_profile defaults (sample_rate={DEFAULT_SAMPLE_RATE})"
    variants: dict = {
        "no decorator": handler,
        "tutorial decorator": tutorial_decorator(handler),
        names_defaults: memory_profile(handler),
        "@memory_profile traced invocation (sample_rate=1)": memory_profile(sample_rate=1.0)(
            handler
        ),
        "@memory_profile(trace=False)": memory_profile(trace=False)(handler),
    }
    event = {"body": make_body()}
    real_stdout = sys.stdout
    devnull = open(os.devnull, "w")  # noqa: SIM115 - the tutorial's prints go here
    sys.stdout = devnull
    try:
        # Warm-up: imports, the process's cold (traced) start, caches; calls per block.
        calls: dict = {}
        for name, fn in variants.items():
            t0 = time.perf_counter()
            for _ in range(20):
                fn(event, None)
            per_call = (time.perf_counter() - t0) / 20
            calls[name] = max(20, int(a.block_ms / 1000 / per_call))
        # The sampled variant gets as many calls as the undecorated one (the warm-up above ran
        # mostly untraced and would give it too few otherwise).
        calls[names_defaults] = calls["no decorator"]
        drain()
        per_round: dict = {name: [] for name in variants}
        counts: dict = {name: [0, 0] for name in variants}
        names = list(variants)
        order_rng = random.Random(1)
        for _ in range(a.rounds):
            order_rng.shuffle(names)
            for name in names:
                fn = variants[name]
                n_calls = calls[name]
                t0 = clock()
                for _ in range(n_calls):
                    fn(event, None)
                per_round[name].append((clock() - t0) / n_calls * 1e6)
                n, traced = drain()
                counts[name][0] += n
                counts[name][1] += traced
    finally:
        sys.stdout = real_stdout
        devnull.close()

    base = per_round["no decorator"]
    added = {n: [v - b for v, b in zip(per_round[n], base)] for n in per_round}
    tut = statistics.mean(added["tutorial decorator"])
    print(
        f"Python {platform.python_version()}, {a.clock} clock, {a.rounds} interleaved rounds of "
        f"~{a.block_ms:.0f} ms per variant (calls per block: "
        f"{', '.join(str(calls[n]) for n in variants)}), "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, load average {load0[0]:.2f} before / "
        f"{os.getloadavg()[0]:.2f} after"
    )
    print()
    print(
        "| variant | median µs/call | median µs added | mean µs added "
        "| added vs tutorial | traced calls |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for n in variants:
        base_row = n == "no decorator"
        ratio = "—" if base_row else f"{statistics.mean(added[n]) / tut:.3f}×"
        med_added = "—" if base_row else f"{statistics.median(added[n]):.1f}"
        mean_added = "—" if base_row else f"{statistics.mean(added[n]):.1f}"
        total, traced = counts[n]
        share = "—" if not total else f"{traced}/{total}"
        print(
            f"| {n} | {statistics.median(per_round[n]):.1f} | {med_added} | {mean_added} "
            f"| {ratio} | {share} |"
        )
    print()
    print(
        "added = a round's mean call time minus the undecorated handler's in the same round; "
        "median and mean over the rounds; the ratio uses the means."
    )
    # The mean of the sampled variant is the most exposed to other processes' bursts. Its
    # expectation also follows from robust parts: the untraced call's median added time plus
    # the traced share times what a traced call adds beyond it.
    total, traced = counts[names_defaults]
    p = traced / total if total else 0.0
    cheap = statistics.median(added["@memory_profile(trace=False)"])
    full = statistics.median(added["@memory_profile traced invocation (sample_rate=1)"])
    expected = cheap + p * (full - cheap)
    tut_med = statistics.median(added["tutorial decorator"])
    print(
        f"defaults, composed from medians: {cheap:.1f} µs untraced + {p:.4f} traced share x "
        f"{full - cheap:.0f} µs = {expected:.1f} µs added per call on average "
        f"({expected / tut_med:.3f}x the tutorial's median); traced call alone "
        f"{full / tut_med:.3f}x the tutorial's median."
    )
    probe = min(timeit.repeat(sys.getallocatedblocks, number=1000, repeat=5)) / 1000 * 1e6
    s = stats()
    print()
    print(
        f"sys.getallocatedblocks() in this process: {probe:.1f} µs "
        f"({sys.getallocatedblocks()} live blocks, {len(ballast)} of them ballast)"
    )
    print(
        f"decorator counters: {s['invocations']} invocations, {s['traced']} traced, "
        f"{s['sent']} records sent, {s['emf_lines']} EMF lines, "
        f"{s['measurement_errors']} measurement errors"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
