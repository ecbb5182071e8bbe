"""The decorator with the native heap sampler: the ``heap`` object of every record, leaks
named at their line, bounded caches flat, the fallbacks, and the sampler's own footprint.

Each scenario runs in a fresh process (the sampler is process-wide), decorated with the
defaults, its records read from a real UDP socket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.join(HERE, "..", "..", "layer", "python")
sys.path.insert(0, PACKAGE_ROOT)

try:
    from lambda_memory_profiler import _native  # noqa: F401

    HAVE_NATIVE = True
except ImportError:
    HAVE_NATIVE = False

needs_native = pytest.mark.skipif(
    not HAVE_NATIVE and os.environ.get("LMP_REQUIRE_NATIVE") != "1",
    reason="the native module is not built for this interpreter",
)

# Runs `body` (which defines `handler`) `count` times and prints every record as JSON lines.
HARNESS = """
import json, os, socket, sys
sys.path.insert(0, {root!r})
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
os.environ["LMP_INTAKE_PORT"] = str(sock.getsockname()[1])
from lambda_memory_profiler import memory_profile, _native
class Context:
    aws_request_id = "req"
{body}
sock.setblocking(False)
for i in range({count}):
    handler({{"i": i}}, Context())
    while True:
        try:
            rec = json.loads(sock.recv(65536))
        except BlockingIOError:
            break
        if rec["kind"] == "invocation":
            print(json.dumps(rec))
"""


def records(body: str, count: int, env: dict[str, str] | None = None) -> list[dict]:
    code = HARNESS.format(root=PACKAGE_ROOT, body=textwrap.dedent(body), count=count)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, **{"LMP_NATIVE": "true", **(env or {})}),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(out) == count, (len(out), proc.stderr[-2000:])
    return out


def site_growth(recs: list[dict]) -> dict[tuple[str, int], int]:
    acc: dict[tuple[str, int], int] = {}
    for r in recs:
        for s in r["heap"]["sites"]:
            key = (s["file"], s["line"])
            acc[key] = acc.get(key, 0) + s["delta_bytes"]
    return acc


def slope(ys: list[int]) -> float:
    n = len(ys)
    mx = (n - 1) / 2
    my = sum(ys) / n
    return sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sum((i - mx) ** 2 for i in range(n))


@needs_native
def test_every_record_carries_the_heap_object():
    recs = records(
        """
        @memory_profile
        def handler(event, context):
            return [str(i) for i in range(1000)]
        """,
        5,
    )
    for r in recs:
        h = r["heap"]
        assert set(h) == {
            "live_bytes",
            "peak_bytes",
            "allocated_bytes",
            "sample_bytes",
            "samples",
            "dropped",
            "epoch",
            "sites",
            "sites_truncated",
        }
        assert h["sample_bytes"] == 16384 and h["epoch"] == 0 and h["dropped"] == 0
        # 1,000 strings and their list: at least ~50 KB allocated per invocation, exactly counted.
        assert h["allocated_bytes"] > 50_000
        assert h["peak_bytes"] >= h["live_bytes"]
        assert r["v"] == 2


@needs_native
@pytest.mark.parametrize("through", ["direct", "json"])
def test_leak_of_10_kib_per_invocation_named_at_its_line_within_40(through):
    leak_line = (
        "            kept.append(bytearray(10240))"
        if through == "direct"
        else "            kept.append(json.loads(payload))"
    )
    recs = records(
        f"""
        kept = []
        payload = json.dumps(["x" * 100] * 80)  # ~10 KiB once parsed
        @memory_profile
        def handler(event, context):
            transient = [dict(n=i) for i in range(300)]
{leak_line}
            return len(transient)
        """,
        40,
    )
    growth = site_growth(recs)
    top = max(growth, key=lambda k: growth[k])
    assert top[0] == "<string>", growth
    # The leak line is line 4 of the handler body, wherever the harness puts it: it is the
    # one line with the most net growth, and close to the truth (40 x ~10 KiB).
    assert growth[top] > 0.4 * 40 * 10240, growth
    live = [r["heap"]["live_bytes"] for r in recs]
    assert live[-1] - live[0] > 0.4 * 39 * 10240, live
    if through == "json":
        vias = [
            s.get("via", "") for r in recs for s in r["heap"]["sites"] if s["file"] == "<string>"
        ]
        assert any("json" in v for v in vias), vias


@needs_native
def test_full_bounded_cache_with_large_entries_shows_no_growth():
    recs = records(
        """
        import collections
        cache = collections.OrderedDict()
        @memory_profile
        def handler(event, context):
            cache[event["i"]] = bytearray(512 * 1024)
            while len(cache) > 20:
                cache.popitem(last=False)
            return len(cache)
        """,
        120,
    )
    live = [r["heap"]["live_bytes"] for r in recs][30:]
    # Full from invocation 20 on: no growth, well under the extension's 1 KiB/invocation floor.
    assert abs(slope(live)) < 1024, slope(live)
    assert max(live) - min(live) < 512 * 1024, (min(live), max(live))


@needs_native
@needs_native
def test_the_samplers_own_site_tables_are_not_counted_as_the_functions_blocks():
    # Every invocation keeps one block from a site the sampler has not met, in place of the
    # one before: the function's heap is flat, while the tables that name the sampler's stacks
    # grow at every read. Those blocks are the decorator's: heap_blocks must stay flat.
    body = """
    funcs = []
    for k in range(300):
        ns = {}
        src = "def f():\\n    return bytearray(200_000)\\n"
        exec(compile(src, f"/var/task/m{k}.py", "exec"), ns)
        funcs.append(ns["f"])
    held = [None]
    @memory_profile(trace=False)
    def handler(event, context):
        held[0] = funcs[event["i"]]()
    """
    recs = records(body, 300)
    # (The count is taken every few invocations only where it is slow: 3.9's smaller arenas.)
    points = [(i, r["heap_blocks"]) for i, r in enumerate(recs) if i >= 100]
    points = [(x, y) for x, y in points if y is not None]
    sites = {s["file"] for r in recs for s in r["heap"]["sites"]}
    assert len(sites) > 250, len(sites)  # the sampler met (nearly) every new site
    assert len(points) > 20, points
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    per_invoke = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    # Measured, blocks per invocation: with the tables taken out +0.2 to +0.35 on 3.11-3.13 and
    # +1.5 to +1.56 on 3.9 and 3.10 (four runs each); with them +2.7 on 3.11, +3.5 on 3.9.
    assert abs(per_invoke) < 2.0, per_invoke


def test_native_off_and_failure_fall_back_without_touching_the_handler():
    body = """
        @memory_profile
        def handler(event, context):
            if event["i"] == 3 and os.environ.get("FAIL_AT_3"):
                _native.inject_failure()
            return event["i"] * 2
        """
    off = records(body, 4, env={"LMP_NATIVE": "false"})
    assert all(r["heap"] is None and r["rss_peak_bytes"] for r in off)
    failed = records(body, 6, env={"FAIL_AT_3": "1"})
    heaps = [r["heap"] is not None for r in failed]
    assert heaps == [True, True, True, False, False, False], heaps
    assert all(r["error_type"] is None for r in failed)


# The decorated process alone: its records are drained and dropped (the shared HARNESS parses
# and prints every record, and that work's own memory would be measured with it).
FOOTPRINT = """
import os, socket, sys
sys.path.insert(0, {root!r})
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
sock.setblocking(False)
os.environ["LMP_INTAKE_PORT"] = str(sock.getsockname()[1])
from lambda_memory_profiler import memory_profile, _native

class Context:
    aws_request_id = "req"

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

@memory_profile
def handler(event, context):
    return [event["i"]] * 10

for i in range(100_000):
    handler({{"i": i}}, Context())
    while True:
        try:
            sock.recv(65536)
        except BlockingIOError:
            break
    if i in (20_000, 99_999):
        foot = _native.stats()[10] if os.environ["LMP_NATIVE"] == "true" else 0
        print("RSS", i, rss(), foot, flush=True)
"""


def test_rss_flat_over_100k_invocations_with_the_sampler():
    """The sampler's own memory stays bounded: over invocations 20,000 to 100,000 its tables do
    not grow, and the process's resident memory grows no more than 64 KiB beyond what the same
    run without the sampler grows (the control). ``tracemalloc`` is off: each of its sessions
    leaves ~1 KiB of native memory behind in CPython itself, ~11 B per invocation at the
    default 1% rate."""
    if not HAVE_NATIVE and os.environ.get("LMP_REQUIRE_NATIVE") != "1":
        pytest.skip("the native module is not built for this interpreter")
    code = FOOTPRINT.format(root=PACKAGE_ROOT)

    def growth(native: str) -> tuple[int, int, int]:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=600,
            env=dict(os.environ, LMP_TRACE="false", LMP_NATIVE=native),
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        marks = {
            int(p[1]): (int(p[2]), int(p[3]))
            for p in (line.split() for line in proc.stdout.splitlines() if line.startswith("RSS"))
        }
        (rss_a, foot_a), (rss_b, foot_b) = marks[20_000], marks[99_999]
        return rss_b - rss_a, foot_a, foot_b

    sampled, foot_20k, foot_100k = growth("true")
    control, _, _ = growth("false")
    assert foot_100k == foot_20k > 0, (foot_20k, foot_100k)
    # Measured: 0 to 8 KiB on 3.9-3.13, two runs each (the control 0); through a harness that
    # parses and prints every record instead, 60 to 328 KiB: the harness's own.
    assert sampled - control < 64 * 1024, (sampled, control)


def test_sites_of_changed_stacks_are_summed_ranked_and_cut_to_top():
    # The per-read site table, on a stand-in for the native module: stacks sharing a site are
    # summed, the package's own site and net-zero sites are left out, the largest change of
    # either sign comes first, the cut is counted, and an epoch change restarts live bytes.
    from lambda_memory_profiler import _heap, _sites

    def code_at(path: str) -> object:
        return compile("pass", path, "exec")

    user_a, user_b = code_at("/var/task/a.py"), code_at("/var/task/b.py")
    own = code_at(os.path.join(_sites.PACKAGE_DIR, "_heap.py"))
    frames = {2: ((user_a, 10),), 3: ((user_a, 10),), 4: ((user_b, 20),), 5: ((own, 1),)}

    class Native:
        epoch = 0

        def frames(self, stack_id):
            return frames[stack_id]

        def stats(self):
            return (1, 0, 0, 0, 0, 0, 0, 0, self.epoch, 16384, 0, 0)

        def changes(self):
            return self.next

    heap = _heap.NativeHeap.__new__(_heap.NativeHeap)
    heap.native, heap.running, heap.last_allocated, heap.last_epoch = Native(), True, 0, 0
    heap._by_stack, heap._by_site, heap.own_blocks, heap._count_overhead = {}, {}, 0, 1

    def read(changes, top=5):
        heap.native.next = changes
        return [(s["file"], s["delta_bytes"], s["live_bytes"]) for s in heap.read(top)["sites"]]

    assert read([(2, 100, 100), (3, 50, 50), (4, -300, 0), (5, 999, 999)]) == [
        ("/var/task/b.py", -300, 0),
        ("/var/task/a.py", 150, 150),
    ]
    heap.native.next = [(2, 10, 0), (4, 5, 0)]
    cut = heap.read(1)
    assert [s["delta_bytes"] for s in cut["sites"]] == [10] and cut["sites_truncated"] == 1
    # One change (the fast path) and several give the same entries.
    assert read([(3, -40, 0)]) == [("/var/task/a.py", -40, 120)]  # 150 + 10 - 40
    assert read([(3, 0, 0)]) == [] and read([(5, 7, 0)]) == []
    heap.native.next = [(3, 1, 0)]
    one_cut = heap.read(0)
    assert one_cut["sites"] == [] and one_cut["sites_truncated"] == 1
    heap.native.epoch = 1
    assert read([(2, 8, 0)]) == [("/var/task/a.py", 8, 8)]  # live restarted from zero
