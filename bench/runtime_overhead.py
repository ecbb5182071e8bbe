"""What `@memory_profile` costs under the real runtime client, not only in-process.

Runs on the project's emulator (`target/release/lambda-emulator run`) with the real `awslambdaric`:

1. the allocation-heavy handler of bench/decorator_overhead.py, undecorated and decorated with
   the defaults, interleaved invocation by invocation in the same execution environment (the
   decorated one first, so its first call is the process's cold start, as in production; then
   bare, decorated, bare, ...: N warm invocations of each), in a few fresh environments. The
   shared 2-core machine has slow phases lasting tens of invocations, which separate
   environments per variant would turn into differences; interleaving hits both variants alike.
   The undecorated calls share the process with the decorator (its gc callback also counts their
   collections, ~1 µs each): a bias of a few µs, in the decorator's favour;
2. the first invocation of a handler whose first call parses 20k JSON records: undecorated,
   decorated with the defaults, and with `LMP_TRACE_COLD=true`, in several fresh processes per
   variant, the variants alternating.

A UDP socket on loopback stands in for the extension's intake (no extension runs: the figures are
the decorator's alone), so the script also counts the traced invocations by `trace.reason`.

Two durations per invocation: `report`, the emulator's `platform.report` `durationMs` (from the
event handed to the runtime to its response: what Lambda bills, the runtime client's work and the
decorator's whole wrapper included), and `handler`, the decorated (or bare) call as timed by the
function module around it (the wrapper included, the runtime client not).

    python bench/runtime_overhead.py [--invocations 400] [--rounds 2] [--cold-runs 10] [--no-native]

The decorated runs take the defaults (`LMP_NATIVE=true`, the sampler on); `--no-native` sets
`LMP_NATIVE=false`.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench" / "runtime"

sys.path.insert(0, str(ROOT / "bench"))
from decorator_overhead import make_body  # noqa: E402

# The function module the runtime imports. BENCH_HANDLER=alloc: the decorated and the bare
# allocation-heavy handler take turns; BENCH_HANDLER=cold: BENCH_VARIANT (bare or lmp) decides.
# Each invocation returns what the call took and which variant ran.
APP = '''
import json
import os
import time
from pathlib import Path

from decorator_overhead import handler as alloc_handler

DATA = Path(__file__).with_name("records.json")
CACHE = {}


def cold_handler(event, context):
    """First call: parses the 20k-record reference table into a module-level cache."""
    if "records" not in CACHE:
        CACHE["records"] = json.loads(DATA.read_text())
    return {"statusCode": 200, "n": len(CACHE["records"])}


if os.environ["BENCH_HANDLER"] == "alloc":
    from lambda_memory_profiler import memory_profile

    VARIANTS = (("lmp", memory_profile(alloc_handler)), ("bare", alloc_handler))
elif os.environ["BENCH_VARIANT"] == "lmp":
    from lambda_memory_profiler import memory_profile

    VARIANTS = (("lmp", memory_profile(cold_handler)),)
else:
    VARIANTS = (("bare", cold_handler),)
CALLS = [0]


def handler(event, context):
    name, fn = VARIANTS[CALLS[0] % len(VARIANTS)]
    CALLS[0] += 1
    t0 = time.perf_counter_ns()
    fn(event, context)
    return {"ns": time.perf_counter_ns() - t0, "variant": name}
'''


class Intake:
    """A loopback UDP socket read by a thread: the records of one emulator run."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.records: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            rec = json.loads(data)
            if rec.get("kind") == "invocation":
                self.records.append(rec)

    def close(self) -> list[dict[str, Any]]:
        self.stop.set()
        self.thread.join()
        self.sock.close()
        return self.records


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def prepare(records: int) -> Path:
    fn = OUT / "fn"
    shutil.rmtree(fn, ignore_errors=True)
    fn.mkdir(parents=True)
    shutil.copy2(ROOT / "bench" / "decorator_overhead.py", fn / "decorator_overhead.py")
    (fn / "rt_app.py").write_text(APP)
    rng = random.Random(12)
    rows = [
        {
            "id": i,
            "sku": f"SKU-{i:06d}",
            "price": round(rng.uniform(1, 500), 2),
            "qty": rng.randint(1, 20),
            "tags": [rng.choice(["new", "sale", "eco", "gift"])],
        }
        for i in range(records)
    ]
    (fn / "records.json").write_text(json.dumps(rows))
    (OUT / "event.json").write_text(json.dumps({"body": make_body()}))
    return fn


def run(
    args: argparse.Namespace, fn: Path, handler: str, variant: str, n: int, env: dict[str, str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One fresh execution environment of n invocations: the emulator's outcomes and the
    decorator's records."""
    intake = Intake()
    full = {
        "BENCH_HANDLER": handler,
        "BENCH_VARIANT": variant,
        "LMP_INTAKE_PORT": str(intake.port),
        **env,
    }
    cmd = [str(args.emulator), "run", "--function-dir", str(fn), "--handler", "rt_app.handler"]
    cmd += ["--layer", str(args.package), "--python", str(args.python)]
    cmd += ["--memory-mb", "512", "--timeout-s", "30", "--invocations", str(n)]
    cmd += ["--function-name", "lmp-runtime-bench", "--json"]
    if handler == "alloc":
        cmd += ["--event", f"@{OUT / 'event.json'}"]
    for k, v in full.items():
        cmd += ["--env", f"{k}={v}"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LMP_")}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=clean)
    finally:
        recs = intake.close()
    if p.returncode != 0:
        sys.exit(f"emulator failed ({p.returncode}): {p.stderr[-3000:]}")
    invs = json.loads(p.stdout)["invocations"]
    bad = [o for o in invs if o["status"] != "success"]
    if bad:
        sys.exit(f"{handler}/{variant}: failed invocation {bad[0]}")
    if variant == "lmp" and len(recs) != n:
        print(f"warning: {len(recs)} records for {n} invocations", file=sys.stderr)
    # Only decorated runs may send records: a bare one sending any would be a wrong set-up.
    if variant == "bare" and recs:
        sys.exit(f"{handler}/bare: {len(recs)} records from an undecorated handler")
    return invs, recs


def reasons(recs: list[dict[str, Any]]) -> collections.Counter:
    return collections.Counter(r["trace"]["reason"] for r in recs if r.get("trace"))


def fmt_reasons(c: collections.Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--invocations", type=int, default=400, help="warm invocations of each variant")
    ap.add_argument("--rounds", type=int, default=2, help="environments of interleaved runs")
    ap.add_argument("--cold-runs", type=int, default=10, help="fresh processes per variant")
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--no-native", action="store_true", help="LMP_NATIVE=false in decorated runs")
    ap.add_argument(
        "--emulator", type=Path, default=ROOT / "target" / "release" / "lambda-emulator"
    )
    ap.add_argument("--python", type=Path, default=ROOT / ".venv" / "bin" / "python")
    ap.add_argument(
        "--package",
        type=Path,
        default=ROOT / "layer",
        help="layer directory whose python/ holds lambda_memory_profiler",
    )
    args = ap.parse_args()
    if not args.emulator.exists():
        sys.exit(f"{args.emulator} missing: cargo build --release -p lambda-emulator")
    fn = prepare(args.records)
    native = {"LMP_NATIVE": "false" if args.no_native else "true"}
    print(
        f"Python {platform.python_version()} under awslambdaric, lambda-emulator, "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
        f"decorated with the defaults and LMP_NATIVE={native['LMP_NATIVE']}, "
        "a UDP intake listening (no extension)"
    )
    print()

    # ---- warm: the allocation-heavy handler, both variants in turn ------------------------------
    n = args.invocations
    report: dict[str, list[float]] = {"bare": [], "lmp": []}
    own: dict[str, list[float]] = {"bare": [], "lmp": []}
    traced: list[collections.Counter] = []
    # The decorated invocations that were not traced: the cheap path alone.
    cheap: dict[str, list[float]] = {"report": [], "handler": []}
    for rnd in range(args.rounds):
        # Decorated (cold), bare, decorated, ...: n warm invocations of each after the first.
        invs, recs = run(args, fn, "alloc", "interleaved", 2 * n + 1, native)
        if len(recs) != n + 1:
            print(f"warning: {len(recs)} records for {n + 1} invocations", file=sys.stderr)
        sampled = {r["request_id"] for r in recs if r.get("trace")}
        for o in invs[1:]:
            v = o["response"]["variant"]
            ms, ns = o["report"]["metrics"]["durationMs"], o["response"]["ns"] / 1e6
            report[v].append(ms)
            own[v].append(ns)
            if v == "lmp" and o["request_id"] not in sampled:
                cheap["report"].append(ms)
                cheap["handler"].append(ns)
        traced.append(reasons(recs))
        print(f"environment {rnd + 1}: traced {fmt_reasons(traced[-1])}", file=sys.stderr)
    print(
        f"Allocation-heavy handler (`bench/decorator_overhead.py`, ~300 orders), {args.rounds} "
        f"environments of {n} warm invocations of each variant, interleaved invocation by "
        "invocation (the decorated cold start left out); durations in ms:"
    )
    print()
    print(
        "| variant | invocations | report mean | report p99 | handler mean | handler median "
        f"| handler p99 | traced by reason, per environment ({n + 1} decorated invocations) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    labels = {"bare": "undecorated", "lmp": "`@memory_profile` (defaults)"}
    for v in ("bare", "lmp"):
        per_env = "; ".join(fmt_reasons(c) for c in traced) if v == "lmp" else "—"
        print(
            f"| {labels[v]} | {len(report[v]):,} | {statistics.fmean(report[v]):.3f} | "
            f"{pct(report[v], 0.99):.3f} | {statistics.fmean(own[v]):.3f} | "
            f"{statistics.median(own[v]):.3f} | {pct(own[v], 0.99):.3f} | {per_env} |"
        )
    print(
        f"| `@memory_profile`, untraced invocations only | {len(cheap['report']):,} | "
        f"{statistics.fmean(cheap['report']):.3f} | {pct(cheap['report'], 0.99):.3f} | "
        f"{statistics.fmean(cheap['handler']):.3f} | {statistics.median(cheap['handler']):.3f} | "
        f"{pct(cheap['handler'], 0.99):.3f} | — |"
    )
    b, d = statistics.fmean(report["bare"]), statistics.fmean(report["lmp"])
    print(
        f"| added by the decorator | | {d - b:+.3f} ({(d - b) / b:+.1%}) | "
        f"{pct(report['lmp'], 0.99) - pct(report['bare'], 0.99):+.3f} | "
        f"{statistics.fmean(own['lmp']) - statistics.fmean(own['bare']):+.3f} | "
        f"{statistics.median(own['lmp']) - statistics.median(own['bare']):+.3f} | "
        f"{pct(own['lmp'], 0.99) - pct(own['bare'], 0.99):+.3f} | |"
    )
    print()

    # ---- cold: the first invocation of a handler parsing 20k records --------------------------
    cold_variants = [
        ("bare", {}, "undecorated"),
        ("lmp", native, "`@memory_profile` (defaults)"),
        ("lmp", {**native, "LMP_TRACE_COLD": "true"}, "`@memory_profile`, `LMP_TRACE_COLD=true`"),
    ]
    first: dict[str, dict[str, list[float]]] = {
        label: {"report": [], "handler": []} for _, _, label in cold_variants
    }
    cold_traced: dict[str, collections.Counter] = {
        label: collections.Counter() for _, _, label in cold_variants
    }
    for i in range(args.cold_runs):
        order = cold_variants if i % 2 == 0 else list(reversed(cold_variants))
        for variant, env, label in order:
            invs, recs = run(args, fn, "cold", variant, 1, env)
            m = invs[0]["report"]["metrics"]
            first[label]["report"].append(m["durationMs"])
            first[label]["handler"].append(invs[0]["response"]["ns"] / 1e6)
            cold_traced[label] += reasons(recs)
    print(
        f"First invocation of a handler whose first call parses {args.records:,} JSON records, "
        f"{args.cold_runs} fresh processes per variant, alternating; ms:"
    )
    print()
    print(
        "| variant | report median | report min–max | handler median | first invocations traced |"
    )
    print("|---|---:|---:|---:|---|")
    base = statistics.median(first["undecorated"]["report"])
    for _, _, label in cold_variants:
        f = first[label]
        med = statistics.median(f["report"])
        ratio = "" if label == "undecorated" else f" ({med / base:.2f}×)"
        print(
            f"| {label} | {med:.1f}{ratio} | {min(f['report']):.1f}–{max(f['report']):.1f} | "
            f"{statistics.median(f['handler']):.1f} | "
            f"{fmt_reasons(cold_traced[label]) if label != 'undecorated' else '—'} |"
        )
    print()
    print(f"Load average at the end: {os.getloadavg()[0]:.2f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
