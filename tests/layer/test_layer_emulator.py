"""The layer zip, unpacked as /opt, in the project's Lambda emulator with the real awslambdaric
runtime client: an example's leaky and fixed twins run warm for many invocations, the extension
from the zip publishes Embedded Metric Format lines, and the two twins tell apart."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER_ZIP = Path(os.environ.get("LMP_LAYER_ZIP", ROOT / "build" / "layer.zip"))
EMULATOR = Path(os.environ.get("LMP_EMULATOR", ROOT / "target" / "debug" / "lambda-emulator"))
INVOCATIONS = 60
NAMESPACE = "LayerEmulatorTest"


@pytest.fixture(scope="module")
def opt(tmp_path_factory) -> Path:
    assert LAYER_ZIP.is_file(), f"{LAYER_ZIP} missing: run `make layer`"
    assert EMULATOR.is_file(), f"{EMULATOR} missing: run `cargo build -p lambda-emulator`"
    root = tmp_path_factory.mktemp("opt")
    with zipfile.ZipFile(LAYER_ZIP) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, root))
            if not info.is_dir():
                path.chmod((info.external_attr >> 16) & 0o777 or 0o644)
    return root


def run(opt: Path, example: str, variant: str) -> dict:
    cmd = [
        str(EMULATOR),
        "run",
        "--layer",
        str(opt),
        "--function-dir",
        str(ROOT / "examples" / example),
        "--handler",
        f"{variant}.handler",
        "--invocations",
        str(INVOCATIONS),
        "--memory-mb",
        "256",
        "--timeout-s",
        "30",
        "--python",
        sys.executable,
        "--function-name",
        f"{example}-{variant}",
        "--json",
    ]
    for k, v in {
        "LMP_NAMESPACE": NAMESPACE,
        "LMP_SINK": "emf",
        # One EMF line per invocation, before the extension's next /next: complete at SHUTDOWN.
        "LMP_FLUSH": "end",
        "SPOOL_DIR": str(opt.parent / f"spool-{variant}"),
    }.items():
        cmd += ["--env", f"{k}={v}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def emf_values(result: dict, metric: str) -> list[float]:
    lines = result["output"]["extensions"]["lambda-memory-profiler"]
    values: list[float] = []
    for line in lines:
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        doc = json.loads(line)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == NAMESPACE
            assert directive["Dimensions"] == [["FunctionName"]]
        value = doc.get(metric)
        if value is not None:
            values += value if isinstance(value, list) else [value]
    return values


@pytest.mark.parametrize("example", ["param_store", "log_aggregator", "pod_watcher"])
def test_layer_tells_leaky_and_fixed_twins_apart(opt, example):
    # Every leaky twin leaks more than this per invocation (examples/README.md).
    leak_per_call = 16 * 1024
    results = {variant: run(opt, example, variant) for variant in ("leaky", "fixed")}
    for variant, result in results.items():
        statuses = [i["status"] for i in result["invocations"]]
        assert statuses == ["success"] * INVOCATIONS, (variant, statuses)
        (ext,) = result["extensions"]
        assert ext["name"] == "lambda-memory-profiler"
        # Ended by itself after SHUTDOWN: no crash, no SIGKILL at the deadline.
        assert ext["exit"]["exited"] and ext["exit"]["code"] == 0, ext["exit"]
        assert not ext["exit"]["exited_before_shutdown"] and not ext["exit"]["killed_at_deadline"]
        print(
            f"{example}/{variant}: first /next {ext['spawn_to_first_next']:.1f} ms after spawn, "
            f"extension peak RSS {ext['peak_rss_bytes'] / 2**20:.1f} MiB"
        )

    # Net growth, not gross retention: a bounded cache that replaces entries retains new blocks
    # on every call while its size stays the same. The extension's figure (the slope of the
    # runtime's resident anonymous memory) is published once a window is judged.
    growth = {v: emf_values(r, "HeapGrowthPerInvoke") for v, r in results.items()}
    rss = {v: emf_values(r, "RuntimeRss") for v, r in results.items()}
    for variant in results:
        assert len(growth[variant]) >= INVOCATIONS // 3, (variant, len(growth[variant]))
        assert len(rss[variant]) >= INVOCATIONS // 2, (variant, len(rss[variant]))
        print(
            f"{example}/{variant}: median HeapGrowthPerInvoke "
            f"{statistics.median(growth[variant]):.0f} B, RuntimeRss "
            f"{rss[variant][0] / 2**20:.1f} -> {rss[variant][-1] / 2**20:.1f} MiB"
        )
    assert statistics.median(growth["leaky"]) > leak_per_call
    # Below the heap-growth warning's threshold (template.yaml, 16 KiB): a fixed twin never
    # alarms. Not near zero: in 60 invocations log_aggregator's fixed twin is still filling its
    # bounded 2,000-id dedup window (~8 KiB a call, measured 8.0-8.4 KiB), which is real growth.
    assert statistics.median(growth["fixed"]) < leak_per_call
    assert statistics.median(growth["leaky"]) > 4 * max(statistics.median(growth["fixed"]), 0)
    # The leak is visible in the process's RSS too, the fix is not.
    leaky_rss_growth = rss["leaky"][-1] - rss["leaky"][0]
    fixed_rss_growth = rss["fixed"][-1] - rss["fixed"][0]
    assert leaky_rss_growth > 2 * max(fixed_rss_growth, 0) + 256 * 1024
