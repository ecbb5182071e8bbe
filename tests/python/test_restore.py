"""Copies of one memory image: SnapStart restores and forks.

Every copy restored from one SnapStart snapshot resumes the same memory, so a sampling
generator seeded during init would pick the same invocations in every copy. Here a copy is a
child made with the C library's ``fork()`` (not ``os.fork``: a snapshot copy runs no at-fork
handler), which shares the image exactly as a restored copy does. With the runtime's real
after-restore hooks (``awslambdaric``'s hook runner where it is installed, else the
``snapshot_restore_py`` registry it runs) the
copies sample different invocations; without them they sample the very same ones (the
pitfall, shown by the control). An ``os.fork()`` child is re-seeded by the at-fork handler.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict

import pytest
from conftest import ROOT

pytest.importorskip("snapshot_restore_py")

INVOCATIONS = 60

COPIES = f"""
import ctypes, os, sys
sys.path.insert(0, {str(ROOT / "layer" / "python")!r})
from lambda_memory_profiler import memory_profile

class Ctx:
    def __init__(self, rid):
        self.aws_request_id = rid

# A rate-sampled handler with no tracing budget: which invocations are traced is the
# generator's choice alone.
@memory_profile(sample_rate=0.3, trace_budget_us=0)
def handler(event, context):
    return sum(range(200))

handler({{}}, Ctx("init"))  # the cold start, before the snapshot point
mode = sys.argv[1]
fork = os.fork if mode == "os-fork" else ctypes.CDLL(None).fork
children = []
for copy in range(2):
    pid = fork()
    if pid == 0:
        if mode == "restore":
            try:  # the runtime client's own hook runner, where it is installed
                from awslambdaric.lambda_runtime_hooks_runner import run_after_restore
            except ImportError:  # the registry it runs
                from snapshot_restore_py import get_after_restore
                def run_after_restore():
                    for f, args, kwargs in get_after_restore():
                        f(*args, **kwargs)
            run_after_restore()
        for i in range({INVOCATIONS}):
            handler({{}}, Ctx(f"{{copy}}-{{i}}"))
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
"""


def traced_by_copy(
    intake, mode: str, native: str = "false"
) -> tuple[dict[int, set[int]], list[dict]]:
    env = dict(os.environ, LMP_INTAKE_PORT=str(intake.port), LMP_NATIVE=native)
    for var in ("LMP_SAMPLE_RATE", "LMP_TRACE_BUDGET_US", "LMP_DISABLE"):
        env.pop(var, None)
    subprocess.run([sys.executable, "-c", COPIES, mode], check=True, env=env, timeout=120)
    traced: dict[int, set[int]] = defaultdict(set)
    pids = set()
    for _ in range(1 + 2 * INVOCATIONS):
        rec = intake.next()
        if rec["request_id"] == "init":
            continue
        copy, i = (int(x) for x in rec["request_id"].split("-"))
        if native == "true":
            assert rec.get("heap") is not None, "the native sampler ran in the copy"
        pids.add((copy, rec["pid"]))
        # The warm-up trace is the third invocation of each process, not a draw: not counted.
        if rec.get("trace") and rec["trace"]["reason"] != "warmup":
            assert rec["trace"]["reason"] == "rate", rec["trace"]
            traced[copy].add(i)
    assert len(pids) == 2, pids
    return traced, intake.hellos


def test_without_the_after_restore_hook_copies_would_sample_the_same_invocations(intake):
    traced, _ = traced_by_copy(intake, "copy")
    assert traced[0], "some invocations traced"
    assert traced[0] == traced[1]


@pytest.mark.parametrize("native", ["false", "true"])
def test_after_the_runtimes_restore_hook_copies_sample_different_invocations(intake, native):
    # With the native sampler too: its generator is re-seeded in the same hook.
    traced, hellos = traced_by_copy(intake, "restore", native)
    assert traced[0] and traced[1]
    assert traced[0] != traced[1]
    # Each copy said hello again with its own pid before its first record.
    assert len({h["pid"] for h in hellos}) == 3, hellos


def test_a_forked_child_gets_its_own_sequence(intake):
    traced, hellos = traced_by_copy(intake, "os-fork")
    assert traced[0] != traced[1]
    assert len({h["pid"] for h in hellos}) == 3, hellos
