"""`make demo`: a leaky function and its fixed twin, three execution environments each, on the
local Lambda emulator with the real layer and the decorator's default settings; metrics go to a
local CloudWatch (LocalStack), each environment's log lines to its own log stream, and the report
is printed by `lambda-memory-profiler-report`, the command that reports on deployed functions.

Runs with the LocalStack venv's Python (it has boto3). Steps:
1. unpack build/layer.zip as the layer (/opt);
2. start LocalStack on a free loopback port;
3. run every environment through `lambda-emulator run --json` at once (extension sink:
   CloudWatch PutMetricData against LocalStack);
4. write what Lambda would write to each environment's log stream: the extension's lines and the
   platform's REPORT line of every invocation;
5. run `lambda-memory-profiler-report` against LocalStack (text report and build/demo/memory.svg).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "LambdaMemoryProfilerDemo"
MEMORY_MB = 512
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo"}


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
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=2) as r:
                body = r.read()
                if b'"cloudwatch": "available"' in body and b'"logs": "available"' in body:
                    return proc, endpoint
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    sys.exit(f"LocalStack did not start; see {state.parent / 'localstack.log'}")


def start_environment(emulator: Path, opt: Path, example: str, variant: str, n: int, env: dict):
    """One execution environment of `demo-<example>-<variant>`: `lambda-emulator run`, in the
    background."""
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
        str(MEMORY_MB),
        "--timeout-s",
        "30",
        "--python",
        str(ROOT / ".venv" / "bin" / "python"),
        "--function-name",
        f"demo-{example}-{variant}",
        "--json",
    ]
    # Each environment has its own intake port, as each Lambda sandbox has its own loopback.
    for k, v in {**env, "LMP_INTAKE_PORT": str(free_port())}.items():
        cmd += ["--env", f"{k}={v}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def epoch_ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def report_line(record: dict) -> str | None:
    """The platform's REPORT line, as Lambda writes it to the environment's log stream."""
    m = record.get("metrics") or {}
    try:
        line = (
            f"REPORT RequestId: {record['requestId']}\tDuration: {m['durationMs']:.2f} ms\t"
            f"Billed Duration: {m['billedDurationMs']:.0f} ms\t"
            f"Memory Size: {m['memorySizeMB']} MB\tMax Memory Used: {m['maxMemoryUsedMB']} MB\t"
        )
    except KeyError:
        return None
    if "initDurationMs" in m:
        line += f"Init Duration: {m['initDurationMs']:.2f} ms\t"
    return line


def log_events(doc: dict) -> list[dict]:
    """The environment's log stream: extension lines and REPORT lines, in time order. Extension
    lines carry no timestamp in the emulator's output: a line naming a request gets that
    request's report time, any other the time of the last one before it."""
    at_request = {}
    events = []
    for t in doc["telemetry"]:
        if t["type"] == "platform.report":
            ms = epoch_ms(t["time"])
            at_request[t["record"].get("requestId")] = ms
            line = report_line(t["record"])
            if line:
                events.append({"timestamp": ms, "message": line})
    now = min(at_request.values(), default=int(time.time() * 1000))
    for text in doc["output"]["extensions"].get("lambda-memory-profiler", []):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict):
            now = max(now, at_request.get(value.get("request_id"), value.get("timestamp_ms", now)))
        events.append({"timestamp": now, "message": text})
    return sorted(events, key=lambda e: e["timestamp"])


def ship(logs, name: str, events: list[dict]) -> None:
    group = f"/aws/lambda/{name}"
    stream = dt.datetime.now(dt.timezone.utc).strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    for i in range(0, len(events), 5000):
        logs.put_log_events(
            logGroupName=group, logStreamName=stream, logEvents=events[i : i + 5000]
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--example", default="log_aggregator")
    ap.add_argument("--environments", type=int, default=3, help="per twin")
    ap.add_argument("--invocations", type=int, default=100, help="per environment")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "demo")
    args = ap.parse_args()

    emulator = ROOT / "target" / "release" / "lambda-emulator"
    report = ROOT / "target" / "debug" / "lambda-memory-profiler-report"
    opt = unpack_layer(ROOT / "build" / "layer.zip", args.out / "opt")
    state = args.out / "localstack"
    shutil.rmtree(state, ignore_errors=True)
    proc, endpoint = start_localstack(state)
    try:
        aws = {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}
        # The decorator's and the extension's defaults: only where to publish is set.
        env = {**aws, "LMP_NAMESPACE": NAMESPACE}
        variants = ("leaky", "fixed")
        names = [f"demo-{args.example}-{variant}" for variant in variants]
        started = time.monotonic()
        running = [
            (name, start_environment(emulator, opt, args.example, v, args.invocations, env))
            for name, v in zip(names, variants)
            for _ in range(args.environments)
        ]
        logs = boto3.client(
            "logs",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="demo",
            aws_secret_access_key="demo",
            config=Config(retries={"max_attempts": 2}),
        )
        for name, p in running:
            out, err = p.communicate()
            if p.returncode != 0:
                sys.exit(f"emulator failed for {name}:\n{err[-4000:]}")
            ship(logs, name, log_events(json.loads(out)))
        print(
            f"\nlambda-memory-profiler demo: examples/{args.example}, {args.environments} "
            f"environments per twin, {args.invocations} invocations each, {MEMORY_MB} MiB, default "
            f"settings; ran in {time.monotonic() - started:.1f} s. The report below is "
            f"`lambda-memory-profiler-report` reading the local CloudWatch at {endpoint}:\n",
            flush=True,
        )
        chart = args.out / "memory.svg"
        # The run takes seconds: bins of 100 ms show each environment's memory over it.
        cmd = [str(report), "--namespace", NAMESPACE, "--region", REGION]
        cmd += ["--endpoint-url", endpoint, "--since", "10m", "--bin", "100ms"]
        cmd += ["--chart", str(chart)]
        for name in names:
            cmd += ["--function", name]
        result = subprocess.run(cmd, env={**os.environ, **aws}, check=False)
        if result.returncode != 0:
            sys.exit(result.returncode)
        print(f"\nchart: {chart.relative_to(ROOT)}")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
