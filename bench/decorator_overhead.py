"""Time added per call by memory decorators on an allocation-heavy handler.

One process, interleaved rounds: every round runs each variant for the same number of calls in
a shuffled order, so drift of the machine (other processes, frequency) hits all variants alike.
The added time of a variant in a round is its mean call time minus the undecorated handler's in
that round; the table gives the median and the mean of those over the rounds.

    python bench/decorator_overhead.py [--rounds 30] [--calls 100]
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
    ap.add_argument("--calls", type=int, default=100, help="calls per variant per round")
    a = ap.parse_args()

    # An intake socket standing in for the extension; drained between timed blocks.
    intake = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    intake.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    intake.bind(("127.0.0.1", 0))
    intake.setblocking(False)
    port = intake.getsockname()[1]
    os.environ["LMP_INTAKE_PORT"] = str(port)

    def drain() -> None:
        try:
            while True:
                intake.recv(65536)
        except BlockingIOError:
            pass

    variants: dict = {
        "no decorator": handler,
        "tutorial decorator": tutorial_decorator(handler),
        f"@memory_profile defaults (sample_rate={DEFAULT_SAMPLE_RATE})": memory_profile(handler),
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
        # Warm-up: imports, the process's cold (traced) start, caches.
        for fn in variants.values():
            for _ in range(20):
                fn(event, None)
        drain()
        per_round: dict = {name: [] for name in variants}
        names = list(variants)
        order_rng = random.Random(1)
        for _ in range(a.rounds):
            order_rng.shuffle(names)
            for name in names:
                fn = variants[name]
                t0 = time.perf_counter()
                for _ in range(a.calls):
                    fn(event, None)
                per_round[name].append((time.perf_counter() - t0) / a.calls * 1e6)
                drain()
    finally:
        sys.stdout = real_stdout
        devnull.close()

    base = per_round["no decorator"]
    added = {n: [v - b for v, b in zip(per_round[n], base)] for n in per_round}
    tut = statistics.mean(added["tutorial decorator"])
    print(
        f"Python {platform.python_version()}, {a.rounds} rounds x {a.calls} calls per variant, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs"
    )
    print()
    print("| variant | median µs/call | median µs added | mean µs added | added vs tutorial |")
    print("|---|---:|---:|---:|---:|")
    for n in variants:
        ratio = "—" if n == "no decorator" else f"{statistics.mean(added[n]) / tut:.3f}×"
        med_added = "—" if n == "no decorator" else f"{statistics.median(added[n]):.1f}"
        mean_added = "—" if n == "no decorator" else f"{statistics.mean(added[n]):.1f}"
        print(
            f"| {n} | {statistics.median(per_round[n]):.1f} | {med_added} | {mean_added} "
            f"| {ratio} |"
        )
    s = stats()
    print()
    print(
        f"decorator counters: {s['invocations']} invocations, {s['traced']} traced, "
        f"{s['sent']} records sent, {s['emf_lines']} EMF lines, "
        f"{s['measurement_errors']} measurement errors"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
