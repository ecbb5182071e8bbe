"""Handlers for bench/extension_overhead.py, run by awslambdaric under the project's emulator.

`BENCH_VARIANT` picks how the metrics of the (trivial) handler are sent; every invocation returns
the time the wrapped handler took, measured around it, so the added latency of a variant is its
median minus the bare handler's. `BENCH_SYNC_DIR`, when set, holds the module import until the
benchmark has read the extensions' idle RSS (so "idle" really is idle, after every extension's
first /next and before the first invocation).
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

VARIANT = os.environ.get("BENCH_VARIANT", "bare")
NAMESPACE = "LmpBench"

_sync = os.environ.get("BENCH_SYNC_DIR")
if _sync:
    Path(_sync, "ready").touch()
    _deadline = time.monotonic() + 30
    while not Path(_sync, "go").exists() and time.monotonic() < _deadline:
        time.sleep(0.005)


def work(event: Any, context: Any) -> dict[str, int]:
    return {"ok": 1}


if VARIANT == "bare":
    wrapped = work
elif VARIANT == "lmp":
    from lambda_memory_profiler import memory_profile

    wrapped = memory_profile(work)
elif VARIANT == "tutorial":
    from decorator_overhead import tutorial_decorator

    wrapped = tutorial_decorator(work)
elif VARIANT == "boto3":
    import boto3

    # Created at import (init), as a tutorial would: the invocation pays only the call.
    _cw = boto3.client("cloudwatch")

    def wrapped(event: Any, context: Any) -> Any:
        start = time.perf_counter()
        result = work(event, context)
        elapsed_ms = (time.perf_counter() - start) * 1000
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        dims = [{"Name": "FunctionName", "Value": context.function_name}]
        _cw.put_metric_data(
            Namespace=NAMESPACE,
            MetricData=[
                {
                    "MetricName": "RuntimeRssPeak",
                    "Value": peak,
                    "Unit": "Bytes",
                    "Dimensions": dims,
                },
                {
                    "MetricName": "Duration",
                    "Value": elapsed_ms,
                    "Unit": "Milliseconds",
                    "Dimensions": dims,
                },
            ],
        )
        return result
elif VARIANT == "powertools":
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics import MetricUnit

    _metrics = Metrics(namespace=NAMESPACE, service="bench")

    @_metrics.log_metrics
    def wrapped(event: Any, context: Any) -> Any:
        start = time.perf_counter()
        result = work(event, context)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        _metrics.add_metric(name="RuntimeRssPeak", unit=MetricUnit.Bytes, value=peak)
        elapsed_ms = (time.perf_counter() - start) * 1000
        _metrics.add_metric(name="Duration", unit=MetricUnit.Milliseconds, value=elapsed_ms)
        return result
else:
    raise RuntimeError(f"unknown BENCH_VARIANT {VARIANT!r}")


def handler(event: Any, context: Any) -> dict[str, int]:
    t0 = time.perf_counter_ns()
    wrapped(event, context)
    return {"ns": time.perf_counter_ns() - t0}
