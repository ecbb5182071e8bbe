"""Shared fixtures: a real UDP intake standing in for the extension, protocol and EMF checks."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "layer" / "python"))

from lambda_memory_profiler import _handoff, memory_profile  # noqa: E402

MiB = 1 << 20
PROTOCOL = ROOT / "docs" / "protocol.md"
README = ROOT / "README.md"


class Intake:
    """A UDP socket on loopback, like the extension's intake, that decodes what it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * MiB)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5.0)
        self.port: int = self.sock.getsockname()[1]
        self.max_size = 0  # a number, not a list: the intake must not grow the heap itself
        self.hellos: list[dict[str, Any]] = []

    def next(self) -> dict[str, Any]:
        """The next invocation record (hello records are kept aside)."""
        while True:
            data = self.sock.recv(65536)
            self.max_size = max(self.max_size, len(data))
            rec = json.loads(data.decode("utf-8"))
            if rec.get("kind") == "hello":
                self.hellos.append(rec)
                continue
            return rec

    def pending(self) -> int:
        """Invocation records still queued (without waiting)."""
        n = 0
        self.sock.setblocking(False)
        try:
            while True:
                rec = json.loads(self.sock.recv(65536))
                if rec.get("kind") == "invocation":
                    n += 1
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(5.0)
        return n

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def intake():
    i = Intake()
    # The decorator keeps one sender per port for the process's life, and says hello once per
    # sender: a sender left from an earlier test whose intake had this same port number (the
    # kernel hands freed ports out again) would send no hello to this one.
    _handoff._senders.pop(i.port, None)
    yield i
    i.close()


@pytest.fixture(scope="session", autouse=True)
def past_cold_start():
    """Spends the process's cold start, so that tests see warm invocations unless they ask."""
    port = free_udp_port()
    memory_profile(intake_port=port, trace=False)(lambda e, c: None)({}, None)


def free_udp_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def protocol_example(kind: str) -> dict[str, Any]:
    """The JSON example of a record kind in docs/protocol.md."""
    for block in re.findall(r"```json\n(.*?)```", PROTOCOL.read_text(), re.S):
        obj = json.loads(block)
        if obj.get("kind") == kind:
            return obj
    raise AssertionError(f"no {kind} example in {PROTOCOL}")


def protocol_fields() -> set[str]:
    """Field names of the invocation table in docs/protocol.md (dotted for nested ones)."""
    return set(re.findall(r"^\| `([a-z_.]+)` \|", PROTOCOL.read_text(), re.M))


def _same_type(value: Any, example: Any) -> bool:
    if example is None:
        return True
    if isinstance(example, bool):
        return isinstance(value, bool)
    if isinstance(example, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(example))


def check_invocation(rec: dict[str, Any]) -> None:
    """Checks one decoded record against the protocol's example and field table."""
    example = protocol_example("invocation")
    table = protocol_fields()
    assert set(rec) == set(example), set(rec) ^ set(example)
    for key, value in rec.items():
        documented = key in table or any(f.startswith(key + ".") for f in table)
        assert key in ("v", "kind") or documented, f"{key} undocumented"
        if value is not None:
            assert _same_type(value, example[key]), (key, value)
    assert rec["v"] == 2 and rec["kind"] == "invocation"
    assert rec["rss_peak_scope"] in ("invocation", "process")
    assert rec["duration_ms"] >= 0
    assert set(rec["gc"]) == set(example["gc"])
    for k, v in rec["gc"].items():
        assert f"gc.{k}" in table
        assert v is None or (isinstance(v, int) and v >= 0), (k, v)
    heap = rec["heap"]
    if heap is not None:
        assert set(heap) == set(example["heap"]), set(heap) ^ set(example["heap"])
        for k in heap:
            assert f"heap.{k}" in table, f"heap.{k} undocumented"
        for site in heap["sites"]:
            assert set(site) - {"via"} == set(example["heap"]["sites"][0]) - {"via"}, site
    trace = rec["trace"]
    if trace is not None:
        assert set(example["trace"]) <= set(trace)
        for k in trace:
            assert f"trace.{k}" in table, f"trace.{k} undocumented"
        assert trace["reason"] in ("cold", "warmup", "rate", "suspect", "always")
        assert trace["mode"] in ("own", "shared")
        if trace["mode"] == "own":
            assert trace["growth_bytes"] is None, trace  # no net figure from own-mode tracing
        for site in trace["top"]:
            assert set(site) - {"via"} == {"file", "line", "size", "count"}, site
            assert isinstance(site["line"], int) and site["size"] > 0 and site["count"] > 0
            if "via" in site:
                # The allocating frame, "file:line", only when it is not the site itself.
                file, _, line = site["via"].rpartition(":")
                assert file and line.isdigit(), site
                assert (file, int(line)) != (site["file"], site["line"]), site


# Units CloudWatch accepts (MetricDatum.Unit).
CW_UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second",
    "Terabits/Second", "Count/Second", "None",
}  # fmt: skip


def readme_metrics() -> dict[str, str]:
    """Metric name → unit from the README's metric table."""
    return dict(re.findall(r"^\| `(\w+)` \| (\w+) \|", README.read_text(), re.M))


def check_emf(line: str, namespace: str) -> dict[str, Any]:
    """Validates one Embedded Metric Format line against the specification's limits."""
    assert len(line.encode()) <= 1_000_000
    doc = json.loads(line)
    meta = doc["_aws"]
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000
    directives = meta["CloudWatchMetrics"]
    assert isinstance(directives, list) and directives
    names = readme_metrics()
    for d in directives:
        assert d["Namespace"] == namespace
        assert 0 < len(d["Namespace"]) <= 255
        assert isinstance(d["Dimensions"], list)
        for dimset in d["Dimensions"]:
            assert 0 < len(dimset) <= 30
            for dim in dimset:
                assert isinstance(doc[dim], str) and doc[dim], dim
        assert 0 < len(d["Metrics"]) <= 100
        for m in d["Metrics"]:
            assert m["Name"] in names, m["Name"]
            assert m["Unit"] == names[m["Name"]] and m["Unit"] in CW_UNITS
            assert m.get("StorageResolution", 60) in (1, 60)
            value = doc[m["Name"]]
            values = value if isinstance(value, list) else [value]
            assert len(values) <= 100
            for v in values:
                assert isinstance(v, (int, float)) and not isinstance(v, bool)
                assert math.isfinite(v)
    return doc


@pytest.fixture
def lmp_env(monkeypatch):
    """Clears LMP_* variables so that each test starts from the documented defaults."""
    for k in list(os.environ):
        if k.startswith("LMP_"):
            monkeypatch.delenv(k)
    return monkeypatch


try:  # `make fuzz`: 100,000 examples of each hypothesis property (`--hypothesis-profile=fuzz`).
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("fuzz", max_examples=100_000, deadline=None)
except ImportError:  # the per-version venvs have no hypothesis: those tests skip
    pass
