"""Workloads for the native heap sampler's tests, one per run of this script (a separate
process each: a crash is a failed exit status, not a dead test runner).

    python native_scenarios.py <scenario> [args...]

Prints one JSON object with the scenario's figures on the last line of stdout.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "layer", "python"))

from lambda_memory_profiler import _native  # noqa: E402

MODE, LIVE, ALLOCATED, SAMPLES, TAKEN, DROPPED, OVERFLOWED, FAILURES, EPOCH, MEAN, FOOTPRINT = (
    range(11)
)
SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


def live() -> int:
    return _native.stats()[LIVE]


def _small_objects(n: int) -> list:
    return [(i, str(i) * 2, [i]) for i in range(n)]


def _large_objects(n: int) -> list:
    return [bytearray(1_000_000 + 4096 * i) for i in range(n)]


def _mixed(n: int) -> list:
    out: list = []
    for i in range(n):
        out.append({"id": i, "name": f"item-{i}", "tags": [i, i + 1]})
        if i % 500 == 0:
            out.append(bytes(200_000))
    return out


def _grown_by_realloc(n: int) -> list:
    """Blocks that reach their size through many reallocs, in place and moved: bytearrays
    grown 100 bytes at a time, strings concatenated in place, and one list grown by appends."""
    arrays = [bytearray() for _ in range(n)]
    for _ in range(200):
        for b in arrays:
            b += b"x" * 100
    texts = []
    for _ in range(n * 4):
        t = ""
        for _ in range(30):
            t += "abcdefghij"
        texts.append(t)
    appended: list = []
    for i in range(n * 200):
        appended.append(i)
    return [arrays, texts, appended]


WORKLOADS = {
    "small": (_small_objects, 150_000),
    "large": (_large_objects, 20),
    "mixed": (_mixed, 60_000),
    "realloc": (_grown_by_realloc, 1_000),
}


@scenario
def accuracy(kind: str, mean: str, seed: str) -> dict:
    """The live-heap change of building a workload, native estimate vs tracemalloc."""
    build, n = WORKLOADS[kind]
    gc.collect()
    assert _native.start(int(mean), 1, int(seed))
    tracemalloc.start(1)
    t0, l0 = tracemalloc.get_traced_memory()[0], live()
    held = build(n)
    t1, l1 = tracemalloc.get_traced_memory()[0], live()
    tracemalloc.stop()
    result = {"tracemalloc": t1 - t0, "native": l1 - l0, "samples": _native.stats()[SAMPLES]}
    del held
    return result


@scenario
def seeds(count: str, mean: str, kind: str = "") -> dict:
    """The same workload under `count` seeds: each run's estimate against tracemalloc's
    (60,000 small objects, or the `kind` of WORKLOADS)."""
    build, n = WORKLOADS[kind] if kind else (_small_objects, 60_000)
    errors = []
    for seed in range(int(count)):
        gc.collect()
        assert _native.start(int(mean), 1, seed)
        tracemalloc.start(1)
        t0, l0 = tracemalloc.get_traced_memory()[0], live()
        held = build(n)
        t1, l1 = tracemalloc.get_traced_memory()[0], live()
        tracemalloc.stop()
        _native.stop()
        errors.append((l1 - l0) / (t1 - t0) - 1.0)
        del held
    return {"errors": errors}


@scenario
def threads() -> dict:
    """8 threads allocating and freeing at once; everything they held is freed at the end."""
    assert _native.start(4096, 16, 1)
    base = live()
    stop = threading.Event()

    def churn(k: int) -> None:
        keep: list = []
        while not stop.is_set():
            keep.append([k] * 50)
            if len(keep) > 200:
                del keep[:100]
        keep.clear()

    ts = [threading.Thread(target=churn, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    stop.wait(1.5)
    stop.set()
    for t in ts:
        t.join()
    gc.collect()
    st = _native.stats()
    return {"mode": st[MODE], "taken": st[TAKEN], "residual": live() - base, "mean": st[MEAN]}


@scenario
def gil_released() -> dict:
    """C code that allocates with the GIL released, beside Python threads doing blocking I/O."""
    import bz2
    import hashlib
    import socket
    import time
    import zlib

    assert _native.start(1024, 16, 2)
    data = os.urandom(1 << 20) * 8
    a, b = socket.socketpair()

    def pump() -> None:
        for _ in range(200):
            a.sendall(b"x" * 65536)
        a.close()

    def drain() -> None:
        while b.recv(65536):
            pass

    def sleeper() -> None:
        for _ in range(20):
            time.sleep(0.005)
            [bytes(100) for _ in range(100)]

    ts = [threading.Thread(target=f) for f in (pump, drain, sleeper)]
    for t in ts:
        t.start()
    out = []
    for _ in range(3):
        out.append(len(zlib.decompress(zlib.compress(data, 6))))
        out.append(len(bz2.decompress(bz2.compress(data[: 1 << 21]))))
        out.append(hashlib.sha256(data).hexdigest()[:8])
    for t in ts:
        t.join()
    return {"mode": _native.stats()[MODE], "results": len(out), "taken": _native.stats()[TAKEN]}


@scenario
def fork() -> dict:
    """os.fork() and subprocess while sampling: the child allocates and exits cleanly."""
    import subprocess

    assert _native.start(1024, 16, 3)
    keep = [str(i) for i in range(10_000)]
    pid = os.fork()
    if pid == 0:
        try:
            more = [bytes(64) for _ in range(50_000)]
            ok = _native.stats()[MODE] == 1 and len(more) == 50_000
            os._exit(0 if ok else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    proc = subprocess.run([sys.executable, "-c", "print(sum(range(10)))"], capture_output=True)
    return {
        "child_status": os.waitstatus_to_exitcode(status)
        if hasattr(os, "waitstatus_to_exitcode")
        else status,
        "subprocess": proc.stdout.strip().decode(),
        "mode": _native.stats()[MODE],
        "kept": len(keep),
    }


@scenario
def recursion() -> dict:
    """Allocations at the bottom of a 5,000-deep stack, and exceptions unwinding through it."""
    assert _native.start(512, 64, 4)
    sys.setrecursionlimit(20_000)

    def down(k: int) -> list:
        if k == 0:
            return [bytes(128) for _ in range(2_000)]
        return down(k - 1)

    held = down(5_000)
    caught = 0
    for i in range(2_000):
        try:
            try:
                raise ValueError("x" * (i % 50))
            except ValueError as e:
                raise KeyError(str(e)) from e
        except KeyError:
            caught += 1
    return {"mode": _native.stats()[MODE], "held": len(held), "caught": caught}


@scenario
def stress(count: str) -> dict:
    """Tens of millions of allocations through the hook."""
    assert _native.start(65536, 16, 5)
    n = int(count)
    keep = None
    for i in range(n):
        keep = [i]
    st = _native.stats()
    return {"mode": st[MODE], "allocated": st[ALLOCATED], "kept": keep is not None}


@scenario
def tracemalloc_before() -> dict:
    """The user's tracemalloc started before ours, stopped while ours runs: the hook is found
    detached, put back (a new epoch) and measures again."""
    tracemalloc.start()
    assert _native.start(4096, 16, 6)
    a = [bytes(1000) for _ in range(5_000)]
    tracemalloc.stop()  # puts back the allocator saved before ours: we are out of the chain
    st = _native.stats()  # finds that, re-attaches
    gc.collect()
    l0 = live()
    b = [bytes(1000) for _ in range(20_000)]
    grown = live() - l0
    return {
        "epoch": st[EPOCH],
        "hooked": list(_native.hooked()),
        "grown": grown,
        "held": len(a) + len(b),
    }


@scenario
def tracemalloc_after() -> dict:
    """The user's tracemalloc started after ours wraps it; both see the blocks; stopping it
    puts ours back on top."""
    assert _native.start(4096, 16, 7)
    tracemalloc.start()
    hooked_during = list(_native.hooked())
    t0, l0 = tracemalloc.get_traced_memory()[0], live()
    b = [bytes(1000) for _ in range(20_000)]
    t1, l1 = tracemalloc.get_traced_memory()[0], live()
    tracemalloc.stop()
    return {
        "during": hooked_during,
        "after": list(_native.hooked()),
        "epoch": _native.stats()[EPOCH],
        "tracemalloc": t1 - t0,
        "native": l1 - l0,
        "held": len(b),
    }


@scenario
def gc_storm() -> dict:
    """Reference cycles and collections in a loop, with a gc callback that allocates."""
    assert _native.start(2048, 16, 8)
    seen = []
    gc.callbacks.append(lambda phase, info: seen.append(dict(info)))
    for _ in range(300):
        for _ in range(200):
            a: list = []
            b = [a]
            a.append(b)
        gc.collect()
    gc.callbacks.clear()
    return {"mode": _native.stats()[MODE], "collections": len(seen)}


@scenario
def shutdown() -> dict:
    """Exit with the hook installed, a daemon thread still allocating and atexit work."""
    import atexit

    assert _native.start(1024, 16, 9)

    def forever() -> None:
        while True:
            [str(i) for i in range(100)]

    threading.Thread(target=forever, daemon=True).start()
    atexit.register(lambda: [bytes(100) for _ in range(10_000)])
    global _GARBAGE
    _GARBAGE = [{"k": [i]} for i in range(50_000)]
    return {"mode": _native.stats()[MODE]}


@scenario
def every_allocation() -> dict:
    """A mean gap of 1 byte: every allocation is a sample point, the frame capture's own ones
    included (on 3.11+ it creates frame objects): the re-entry path runs constantly."""
    assert _native.start(1, 16, 10)
    held = [str(i) for i in range(20_000)]
    st = _native.stats()
    _native.stop()
    return {"taken": st[TAKEN], "samples": st[SAMPLES], "held": len(held), "mode": st[MODE]}


@scenario
def caps() -> dict:
    """More distinct stacks than the table holds, and more live samples than it keeps: both
    bounded, with the excess counted."""
    assert _native.start(64, 2, 11)
    fns = []
    for i in range(5_000):
        ns: dict = {}
        exec(f"def f{i}():\n    return [bytes(200) for _ in range(3)]\n", ns)
        fns.append(ns[f"f{i}"])
    held = [f() for f in fns]
    many = [bytes(40) for _ in range(400_000)]
    st = _native.stats()
    return {
        "overflowed": st[OVERFLOWED],
        "dropped": st[DROPPED],
        "samples": st[SAMPLES],
        "footprint": st[FOOTPRINT],
        "held": len(held) + len(many),
    }


@scenario
def failure() -> dict:
    """An internal failure: sampling stops, the hook leaves the chain, the program goes on."""
    assert _native.start(1024, 16, 12)
    _native.inject_failure()
    st = _native.stats()
    after = [bytes(100) for _ in range(10_000)]
    restart = _native.start(1024, 16, 12)
    return {
        "mode": st[MODE],
        "failures": st[FAILURES],
        "hooked": list(_native.hooked()),
        "restart": restart,
        "held": len(after),
    }


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    result = SCENARIOS[name](*args)
    print(json.dumps(result))
    sys.stdout.flush()
