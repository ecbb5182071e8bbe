"""list vs tuple vs array.array('q') vs generator for 1,000,000 numbers, measured through the
``@memory_profile`` decorator: bytes held by each structure as tracemalloc sees them (every
allocation traced) and as the native heap sampler estimates them, against sys.getsizeof.

    .venv/bin/python examples/data_structures/compare.py [--sample-bytes 4096] [--json]

One handler per structure builds it, keeps it (a module global) and sums it. The handlers run
twice: with the native sampler alone (``trace=False``: the record's ``heap`` object), then with
every invocation traced (``sample_rate=1``: ``trace.retained_bytes``, the bytes allocated
during the invocation and still held at its end). A UDP socket stands in for the extension and
receives the records. See README.md for how to read the table.
"""

from __future__ import annotations

import argparse
import array
import gc
import json
import math
import os
import socket
import sys
import time

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "layer", "python")
)

from lambda_memory_profiler import memory_profile  # noqa: E402

N = 1_000_000
BUILD = {
    "list": lambda: list(range(N)),
    "tuple": lambda: tuple(range(N)),
    "array('q')": lambda: array.array("q", range(N)),
    "generator": lambda: (i for i in range(N)),
}
# CPython >= 3.11 allocates an int below 2**30 as a whole PyLongObject (_PyLong_FromMedium):
# a 24-byte header and one 4-byte digit, padded to 32 bytes; sys.getsizeof reports 28, the size
# without the padding. 3.9 and 3.10 allocate the 28 bytes.
INT_PADDING = 4 if sys.version_info >= (3, 11) else 0
HELD: list = []  # what the handlers keep after they return


def sizes(obj) -> tuple[int, int, int]:
    """(sys.getsizeof of the container and of the ints it holds, the same with every int at
    its allocated size, bytes of those ints). Ints -5..256 are cached objects, not counted."""
    ints = [i for i in obj if not -5 <= i <= 256] if isinstance(obj, (list, tuple)) else []
    getsizeof = sys.getsizeof(obj) + sum(map(sys.getsizeof, ints))
    allocated = getsizeof + INT_PADDING * len(ints)
    return getsizeof, allocated, allocated - sys.getsizeof(obj)


def timed(name: str) -> tuple[float, float]:
    """Best of 3 (build ms, sum ms), without any profiler."""
    best = [math.inf, math.inf]
    for _ in range(3):
        t0 = time.perf_counter()
        data = BUILD[name]()
        t1 = time.perf_counter()
        sum(data)
        t2 = time.perf_counter()
        del data
        best = [min(best[0], t1 - t0), min(best[1], t2 - t1)]
    return best[0] * 1e3, best[1] * 1e3


def make_handler(name: str, profile):
    @profile
    def handler(event, context):
        HELD.append(BUILD[name]())
        return sum(HELD[-1])  # a generator is consumed here: it produced every number

    return handler


def run(sample_bytes: int) -> list[dict]:
    intake = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    intake.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    intake.bind(("127.0.0.1", 0))
    intake.settimeout(5.0)

    def record() -> dict:
        while True:
            rec = json.loads(intake.recv(65536))
            if rec.get("kind") == "invocation":
                return rec

    times = {name: timed(name) for name in BUILD}  # before the sampler starts
    common = {"intake_port": intake.getsockname()[1], "heap_sample_bytes": sample_bytes}
    # Two passes over the same handlers. Untraced: the native sampler alone (its live and
    # allocated bytes are not disturbed by tracemalloc's snapshot work at the invocation's end).
    # Traced: every invocation under tracemalloc (sample_rate=1, no tracing budget; 1 frame per
    # allocation, as sizes do not depend on it and 16 would triple the run time).
    passes = {
        "native": memory_profile(trace=False, native=True, **common),
        "tracemalloc": memory_profile(sample_rate=1.0, trace_budget_us=0, frames=1, **common),
    }
    rows = {
        name: {"structure": name, "build_ms": t[0], "sum_ms": t[1]} for name, t in times.items()
    }
    for label, profile in passes.items():

        @profile
        def release(event, context):
            HELD.clear()
            gc.collect()

        handlers = {name: make_handler(name, profile) for name in BUILD}
        release({}, None)  # the first call (the process's cold start in the first pass)
        record()
        for name, handler in handlers.items():
            release({}, None)
            before = record()
            handler({}, None)
            rec = record()
            row = rows[name]
            getsizeof, allocated, small = sizes(HELD[-1])
            row.update(getsizeof=getsizeof, allocated=allocated)
            # Relative standard error of the native estimate: blocks far smaller than the mean
            # gap each stand for one gap when sampled, so the variance is gap x their bytes;
            # large blocks (the list's pointer array, the array's buffer) are counted exactly.
            row["sigma"] = math.sqrt(sample_bytes * small) / allocated
            if label == "tracemalloc":
                row["tracemalloc"] = rec["trace"]["retained_bytes"]
            elif rec["heap"] is None:  # no native module here
                row["native"] = row["native_allocated"] = None
            else:
                row["native"] = rec["heap"]["live_bytes"] - before["heap"]["live_bytes"]
                row["native_allocated"] = rec["heap"]["allocated_bytes"]
        release({}, None)
        record()
    return list(rows.values())


def mb(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f} MB" if abs(n) >= 100_000 else f"{n:,} B"


def err(value: int | None, truth: int, name: str) -> str:
    if value is None or name == "generator":  # holds a few hundred bytes: no meaningful ratio
        return "—"
    return f"{value / truth - 1:+.1%}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample-bytes", type=int, default=4096, help="native sampler mean gap")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead")
    a = ap.parse_args()
    rows = run(a.sample_bytes)
    if a.json:
        print(
            json.dumps(
                {"python": sys.version.split()[0], "sample_bytes": a.sample_bytes, "rows": rows}
            )
        )
        return 0
    print(
        f"Python {sys.version.split()[0]}, {N:,} numbers, "
        f"native sampler mean gap {a.sample_bytes} bytes"
    )
    print()
    print(
        "| structure | build ms | sum ms | sys.getsizeof | allocated (truth) | tracemalloc "
        "| native | tracemalloc err | native err | native σ | native allocated |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        name, truth = r["structure"], r["allocated"]
        sigma = "—" if name == "generator" else f"{r['sigma']:.1%}"
        print(
            f"| {name} | {r['build_ms']:.1f} | {r['sum_ms']:.1f} | {mb(r['getsizeof'])} "
            f"| {mb(truth)} | {mb(r['tracemalloc'])} | {mb(r['native'])} "
            f"| {err(r['tracemalloc'], truth, name)} | {err(r['native'], truth, name)} "
            f"| {sigma} | {mb(r['native_allocated'])} |"
        )
    if rows[0]["native"] is None:
        print("\nThe native sampler is not available here (lambda_memory_profiler._native).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
