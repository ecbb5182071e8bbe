"""Records the metric series the alarm test replays: each example's leaky and fixed twin, run
end to end under the project's Lambda emulator with the built layer (extension + decorator,
LMP_SINK=emf), three execution environments each; the extension's EMF lines become one value
per invocation for every metric an alarm reads.

    .venv/bin/python tests/alarms/record_series.py [--layer DIR] [--emulator BIN] [--only CASE]

Needs the unpacked layer (`sam build` stages it in build/sam/MemoryProfilerLayer; `make layer`
in build/layer-x86_64) and the emulator (`cargo build -p lambda-emulator`). Re-record when the
extension's analysis or the examples change; the files are small (run-length encoded).

One EMF document holds the datums of every invocation completed since the previous flush, in
order: per-invocation metrics have one value per invocation, the analysis' leak figures one per
judged invocation (the last ones of the document) and InvocationsToOutOfMemory one per invocation
with a standing verdict. That is how the values are put back on their invocations.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "series"

# The metrics the template's alarms read (the test fails if an alarm reads another).
METRICS = [
    "MemoryUtilization",
    "OutOfMemory",
    "GcUncollectable",
    "HeapGrowthPerInvoke",
    "LeakSuspected",
    "InvocationsToOutOfMemory",
    "ColdStart",
]
# Published once per judged invocation (full window), at the end of a document.
FINDINGS = {"HeapGrowthPerInvoke", "LeakSuspected"}
# The example function's settings in template.yaml (ExampleSampleRate's default is 0.1).
SETTINGS = {"LMP_SINK": "emf", "LMP_FLUSH": "end", "LMP_SAMPLE_RATE": "0.1"}
ENVIRONMENTS = 3


def cases() -> dict[str, dict]:
    out = {}
    for example in ("log_aggregator", "param_store", "pod_watcher"):
        for variant in ("leaky", "fixed"):
            out[f"{example}-{variant}"] = {
                "example": example,
                "variant": variant,
                "memory_mb": 256,
                "invocations": 240,
            }
    # The fastest leak at the smallest size, long enough to run out of memory (~560 invocations).
    out["log_aggregator-leaky-128mb"] = {
        "example": "log_aggregator",
        "variant": "leaky",
        "memory_mb": 128,
        "invocations": 800,
    }
    return out


def run(emulator: Path, layer: Path, case: dict, env_no: int, tmp: Path) -> dict:
    cmd = [
        str(emulator),
        "run",
        "--layer",
        str(layer),
        "--function-dir",
        str(ROOT / "examples" / case["example"]),
        "--handler",
        f"{case['variant']}.handler",
        "--invocations",
        str(case["invocations"]),
        "--memory-mb",
        str(case["memory_mb"]),
        "--timeout-s",
        "30",
        "--python",
        str(ROOT / ".venv" / "bin" / "python"),
        "--function-name",
        f"{case['example']}-{case['variant']}",
        "--json",
        "--allow-failures",
    ]
    spool = tmp / f"spool-{case['example']}-{case['variant']}-{env_no}"
    for k, v in {**SETTINGS, "SPOOL_DIR": str(spool)}.items():
        cmd += ["--env", f"{k}={v}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        sys.exit(f"emulator failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(done.stdout)


def per_invocation(result: dict) -> dict[str, list]:
    """metric -> one value (or None) per invocation, from the extension's EMF documents."""
    lines = result["output"]["extensions"]["lambda-memory-profiler"]
    series: dict[str, list] = {m: [] for m in METRICS}
    for line in lines:
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        doc = json.loads(line)
        values = {}
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for m in directive["Metrics"]:
                v = doc.get(m["Name"])
                values[m["Name"]] = v if isinstance(v, list) else [v]
        n = len(values.get("ColdStart", []))
        if n == 0:
            continue  # the extension's own figures only (a flush with no invocation)
        slots = {m: [None] * n for m in METRICS}
        for m in METRICS:
            vals = values.get(m, [])
            if m == "InvocationsToOutOfMemory":
                continue
            if len(vals) > n:
                sys.exit(f"{m}: {len(vals)} values for {n} invocations in one document")
            slots[m][n - len(vals) :] = vals
        # Published only while a verdict stands: on the invocations whose LeakSuspected is 1.
        vals = values.get("InvocationsToOutOfMemory", [])
        standing = [i for i, v in enumerate(slots["LeakSuspected"]) if v == 1]
        where = standing[-len(vals) :] if len(vals) <= len(standing) else range(n - len(vals), n)
        for i, v in zip(where, vals):
            slots["InvocationsToOutOfMemory"][i] = v
        for m in METRICS:
            series[m] += slots[m]
    return series


def compact(value):
    if value is None:
        return None
    return round(value, 3) if value != int(value) else int(value)


def rle(values: list) -> list[list]:
    """[[value, count], ...]: the series are flat for long stretches."""
    out: list[list] = []
    for v in map(compact, values):
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layer", type=Path, default=ROOT / "build/sam/MemoryProfilerLayer")
    ap.add_argument("--emulator", type=Path, default=ROOT / "target/debug/lambda-emulator")
    ap.add_argument("--only", action="append", help="record this case only (repeatable)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    for path in (args.layer / "extensions/lambda-memory-profiler", args.emulator):
        if not path.is_file():
            sys.exit(f"{path} missing (sam build / make layer; cargo build -p lambda-emulator)")
    args.out.mkdir(parents=True, exist_ok=True)
    python = subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in cases().items():
            if args.only and name not in args.only:
                continue
            envs = []
            for env_no in range(ENVIRONMENTS):
                result = run(args.emulator, args.layer.resolve(), case, env_no, Path(tmp))
                series = per_invocation(result)
                statuses = [i["status"] for i in result["invocations"]]
                envs.append(
                    {
                        "invocations": len(statuses),
                        "failed": [
                            [k, i.get("error_type")]
                            for k, i in enumerate(result["invocations"])
                            if i["status"] != "success"
                        ],
                        "published": len(series["ColdStart"]),
                        "series": {m: rle(v) for m, v in series.items()},
                    }
                )
            doc = {
                "case": name,
                **case,
                "environments_run": ENVIRONMENTS,
                "settings": SETTINGS,
                "recorded_with": {
                    "python": python,
                    "machine": platform.machine(),
                    "how": "tests/alarms/record_series.py: lambda-emulator + the built layer",
                },
                "environments": envs,
            }
            (args.out / f"{name}.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
            print(f"{name}: " + ", ".join(f"{e['published']} invocations published" for e in envs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
