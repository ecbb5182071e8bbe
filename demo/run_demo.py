"""`make demo`: a leaky function and its fixed twin on the local Lambda emulator with the real
layer, metrics published to a local CloudWatch (LocalStack), and a report read back from it.

Runs with the LocalStack venv's Python (it has boto3). Steps:
1. unpack build/layer.zip as the layer (/opt);
2. start LocalStack on a free loopback port;
3. run each twin for N invocations through `lambda-emulator run --json` (extension sink:
   CloudWatch PutMetricData against LocalStack);
4. read the metrics back with GetMetricData, take the extension's leak / right-size log lines
   from its output, print a report and write an SVG chart of memory over invocations.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "LambdaMemoryProfilerDemo"
METRICS = [
    ("MemoryUtilization", "Maximum"),
    ("MaxMemoryUsed", "Maximum"),
    ("PythonHeapPeak", "Maximum"),
    ("HeapGrowthPerInvoke", "Average"),
    ("RuntimeRss", "Maximum"),
    ("LeakSuspected", "Maximum"),
    ("RecommendedMemorySize", "Maximum"),
    ("GcCollected", "Sum"),
    ("OutOfMemory", "Sum"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unpack_layer(zip_path: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, dest))
            if not info.is_dir():
                path.chmod((info.external_attr >> 16) & 0o777 or 0o644)
    return dest


def start_localstack(state: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(state.parent / "localstack.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "localstack.sh"), "run", str(port), str(state)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    import urllib.request

    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=2) as r:
                if b'"cloudwatch": "available"' in r.read():
                    return proc, endpoint
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    sys.exit(f"LocalStack did not start; see {state.parent / 'localstack.log'}")


def run_twin(emulator: Path, opt: Path, example: str, variant: str, n: int, env: dict) -> dict:
    name = f"demo-{example}-{variant}"
    cmd = [
        str(emulator),
        "run",
        "--layer",
        str(opt),
        "--function-dir",
        str(ROOT / "examples" / example),
        "--handler",
        f"{variant}.handler",
        "--invocations",
        str(n),
        "--memory-mb",
        "512",
        "--timeout-s",
        "30",
        "--python",
        str(ROOT / ".venv" / "bin" / "python"),
        "--function-name",
        name,
        "--json",
    ]
    for k, v in env.items():
        cmd += ["--env", f"{k}={v}"]
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"emulator failed for {name}:\n{out.stderr[-4000:]}")
    doc = json.loads(out.stdout)
    doc["name"] = name
    doc["seconds"] = time.monotonic() - started
    return doc


def extension_lines(doc: dict) -> list[dict]:
    lines = []
    for text in doc["output"]["extensions"].get("lambda-memory-profiler", []):
        try:
            v = json.loads(text)
        except ValueError:
            continue
        if isinstance(v, dict) and "lmp" in v:
            lines.append(v)
    return lines


def read_back(cw, name: str, start: dt.datetime, end: dt.datetime) -> dict:
    queries = [
        {
            "Id": f"m{i}",
            "MetricStat": {
                "Metric": {
                    "Namespace": NAMESPACE,
                    "MetricName": metric,
                    "Dimensions": [{"Name": "FunctionName", "Value": name}],
                },
                "Period": 3600,
                "Stat": stat,
            },
        }
        for i, (metric, stat) in enumerate(METRICS)
    ]
    resp = cw.get_metric_data(MetricDataQueries=queries, StartTime=start, EndTime=end)
    values = {}
    for r in resp["MetricDataResults"]:
        metric = METRICS[int(r["Id"][1:])][0]
        values[metric] = max(r["Values"]) if r["Values"] else None
    return values


def fmt_bytes(v: float | None) -> str:
    if v is None:
        return "—"
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(v) >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v:.0f} B"


def svg_chart(series: dict[str, list[float]], path: Path, memory_mb: int) -> None:
    width, height, pad = 720, 320, 50
    n = max(len(s) for s in series.values())
    top = max(max(s) for s in series.values() if s) * 1.1
    colours = ["#d62728", "#2ca02c", "#1f77b4", "#ff7f0e"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">'
        f"Memory used (platform maxMemoryUsedMB) over invocations, {memory_mb} MB function</text>",
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - 10}" y2="{height - pad}" '
        'stroke="black"/>',
        f'<line x1="{pad}" y1="30" x2="{pad}" y2="{height - pad}" stroke="black"/>',
        f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle">invocation</text>',
    ]
    for frac in (0, 0.25, 0.5, 0.75, 1):
        x = pad + frac * (width - pad - 10)
        label = round(frac * max(n - 1, 1)) + 1
        parts.append(f'<text x="{x}" y="{height - pad + 16}" text-anchor="middle">{label}</text>')
        y = height - pad - frac * (height - pad - 30)
        parts.append(f'<text x="{pad - 6}" y="{y + 4}" text-anchor="end">{top * frac:.0f}</text>')
    for i, (label, values) in enumerate(series.items()):
        pts = " ".join(
            f"{pad + k / max(n - 1, 1) * (width - pad - 10):.1f},"
            f"{height - pad - v / top * (height - pad - 30):.1f}"
            for k, v in enumerate(values)
        )
        colour = colours[i % len(colours)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>')
        parts.append(f'<text x="{pad + 10}" y="{44 + 16 * i}" fill="{colour}">{label} (MB)</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--example", default="log_aggregator")
    ap.add_argument("--invocations", type=int, default=300)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "demo")
    args = ap.parse_args()

    emulator = ROOT / "target" / "release" / "lambda-emulator"
    opt = unpack_layer(ROOT / "build" / "layer.zip", args.out / "opt")
    state = args.out / "localstack"
    shutil.rmtree(state, ignore_errors=True)
    proc, endpoint = start_localstack(state)
    try:
        env = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "demo",
            "AWS_SECRET_ACCESS_KEY": "demo",
            "AWS_EC2_METADATA_DISABLED": "true",
            "LMP_NAMESPACE": NAMESPACE,
            "LMP_INTAKE_PORT": str(free_port()),
        }
        start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
        docs = [
            run_twin(emulator, opt, args.example, v, args.invocations, env)
            for v in ("leaky", "fixed")
        ]
        end = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)
        cw = boto3.client(
            "cloudwatch",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="demo",
            aws_secret_access_key="demo",
            config=Config(retries={"max_attempts": 2}),
        )
        print(
            f"\nlambda-memory-profiler demo: examples/{args.example}, {args.invocations} "
            f"invocations per twin, 512 MB, metrics read back from the local CloudWatch "
            f"({endpoint}, namespace {NAMESPACE})\n"
        )
        series = {}
        for doc in docs:
            name = doc["name"]
            m = read_back(cw, name, start, end)
            lines = extension_lines(doc)
            leak = next((x for x in reversed(lines) if x["lmp"] == "leak_suspected"), None)
            first_leak = next((x for x in lines if x["lmp"] == "leak_suspected"), None)
            size = next((x for x in reversed(lines) if x["lmp"] == "right_size"), None)
            used = [
                o["report"]["metrics"]["maxMemoryUsedMB"]
                for o in doc["invocations"]
                if o.get("report")
            ]
            series[name] = used
            print(f"== {name}  ({doc['seconds']:.1f} s)")
            print(
                f"   memory utilization (max)    {m['MemoryUtilization'] or 0:.1f} %"
                f"   ({m['MaxMemoryUsed'] or 0:.0f} MB of 512)"
            )
            print(f"   Python heap peak (max)      {fmt_bytes(m['PythonHeapPeak'])}")
            print(
                f"   heap growth per invocation  {fmt_bytes(m['HeapGrowthPerInvoke'])}"
                "   (resident anonymous memory, mean of the judged invocations)"
            )
            print(f"   runtime RSS (max)           {fmt_bytes(m['RuntimeRss'])}")
            verdict = "LEAK SUSPECTED" if (m["LeakSuspected"] or 0) >= 1 else "no leak"
            when = (
                f" (first flagged at invocation {first_leak['invocations']})" if first_leak else ""
            )
            print(f"   leak verdict                {verdict}{when}")
            if leak:
                print("   top growing allocation sites:")
                for s in leak["growing_sites"]:
                    site = s["site"].replace(str(ROOT) + "/", "")
                    print(f"     {fmt_bytes(s['bytes_per_traced_invoke']):>10}/invoke  {site}")
            rec = m["RecommendedMemorySize"]
            print(
                f"   recommended memory size     {rec:.0f} MB"
                if rec
                else "   recommended memory size     —"
            )
            if leak and rec:
                print("     (a leaking function's peak keeps rising: fix the leak before resizing)")
            elif size and size.get("monthly_saving_usd") is not None:
                print(
                    f"     (peak {size['peak_mb']:.0f} MB + headroom; at this environment's "
                    f"rate: {size['monthly_saving_usd']:+.2f} USD/month)"
                )
            print()
        chart = args.out / "memory.svg"
        svg_chart(series, chart, 512)
        print(f"chart: {chart.relative_to(ROOT)}")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
