"""Overhead of the extension and of sending metrics, against the alternatives, in one run.

Runs everything on the project's emulator (`lambda-emulator run`) with the real `awslambdaric`
runtime, the layer's extension binary (build/layer-x86_64, as `make layer` ships it) and LocalStack
as CloudWatch, then writes the tables into BENCHMARKS.md (between the `extension-bench` markers)
and build/bench/extension.md:

1. spawn -> first /next of the extension vs a do-nothing extension (bench/noop_extension.rs);
2. the extensions' RSS idle, and after 100, 1,000, N/2 and N back-to-back invocations;
3. post-runtime time (runtime response -> the extension's /next) per flush strategy;
4. time the handler spends sending its metrics: decorator + extension vs a synchronous boto3
   put_metric_data vs the tutorial tracemalloc decorator vs Powertools Metrics (EMF);
5. criterion micro-benchmarks of the extension's parsers, join and sinks (benches/pipeline.rs);
6. layer zip and binary size.

`make bench` runs it; see BENCHMARKS.md for the method.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench"
LAYER = ROOT / "build" / "layer-x86_64"
EXT_NAME = "lambda-memory-profiler"
NOOP_NAME = "noop-extension"
# The extension again, with `sandbox.localdomain` in /etc/hosts (as a name Lambda provides).
HOSTS_EXT = "lmp-hosts"
BEGIN = "<!-- extension-bench:begin -->"
END = "<!-- extension-bench:end -->"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    while True:
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


# ---- set-up -----------------------------------------------------------------------------------


def prepare(py: Path) -> dict[str, Path]:
    """Extension dirs, the function dir and the Python layers, under build/bench."""
    OUT.mkdir(parents=True, exist_ok=True)
    shipped = LAYER / "extensions" / EXT_NAME
    if not shipped.exists():
        sys.exit(f"{shipped} missing: run `make layer` first")
    lmp_dir = OUT / "ext-lmp"
    lmp_dir.mkdir(exist_ok=True)
    shutil.copy2(shipped, lmp_dir / EXT_NAME)
    noop_dir = OUT / "ext-noop"
    noop_dir.mkdir(exist_ok=True)
    # The floor, built here with the same optimisation the extension's release profile asks for.
    subprocess.run(
        ["rustc", "--edition", "2021", "-C", "opt-level=s", "-C", "strip=symbols"]
        + ["-o", str(noop_dir / NOOP_NAME), str(ROOT / "bench" / "noop_extension.rs")],
        check=True,
    )
    fn = OUT / "fn"
    fn.mkdir(exist_ok=True)
    shutil.copy2(ROOT / "bench" / "bench_app.py", fn / "bench_app.py")
    shutil.copy2(ROOT / "bench" / "decorator_overhead.py", fn / "decorator_overhead.py")
    deco = OUT / "decorator-layer"
    shutil.rmtree(deco, ignore_errors=True)
    shutil.copytree(LAYER / "python", deco / "python")
    libs = OUT / "pylayer"
    req = ROOT / "bench" / "requirements.txt"
    stamp = libs / ".stamp"
    if not (stamp.exists() and stamp.read_text() == req.read_text()):
        shutil.rmtree(libs, ignore_errors=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--target", str(libs / "python")]
            + ["-r", str(req)],
            check=True,
        )
        stamp.write_text(req.read_text())
    return {"lmp": lmp_dir, "noop": noop_dir, "fn": fn, "deco": deco, "libs": libs}


def hosts_file() -> Path | None:
    """/etc/hosts plus `sandbox.localdomain`, if this machine can mount it privately (root)."""
    if "sandbox.localdomain" in Path("/etc/hosts").read_text():
        return None
    path = OUT / "hosts"
    path.write_text(
        Path("/etc/hosts").read_text().rstrip("\n") + "\n127.0.0.1 sandbox.localdomain\n"
    )
    probe = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            'mount --bind "$0" /etc/hosts && getent hosts sandbox.localdomain',
        ]
        + [str(path)],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0 or "127.0.0.1" not in probe.stdout:
        log("no private mount namespace here: skipping the /etc/hosts variant")
        return None
    return path


@contextmanager
def localstack() -> Iterator[str]:
    """LocalStack on a free loopback port (scripts/localstack.sh), stopped with its group."""
    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="localstack-", dir=OUT))
    logf = open(state / "localstack.log", "w")  # noqa: SIM115 - closed below
    (state / "tmp").mkdir()
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "localstack.sh"), "run", str(port), str(state)],
        # LocalStack keeps its CloudWatch database under $TMPDIR/localstack: a private one, or
        # another instance on the machine deletes it when it stops.
        env={**os.environ, "TMPDIR": str(state / "tmp")},
        stdout=logf,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_localstack/health", timeout=2) as r:
                    if '"cloudwatch": "' in r.read().decode():
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"LocalStack did not start; see {state / 'localstack.log'}")
            time.sleep(0.25)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        logf.close()
        shutil.rmtree(state, ignore_errors=True)


class Runner:
    def __init__(
        self, emulator: Path, py: Path, dirs: dict[str, Path], endpoint: str, hosts: Path | None
    ):
        self.hosts = hosts
        self.emulator = emulator
        self.py = py
        self.dirs = dirs
        self.endpoint = endpoint

    def cmd(self, ext: str, variant: str, invocations: int, env: dict[str, str]) -> list[str]:
        full = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_EC2_METADATA_DISABLED": "true",
            "LMP_INTAKE_PORT": str(free_port()),
            "BENCH_VARIANT": variant,
            **env,
        }
        c = []
        if ext == HOSTS_EXT:
            # The same run in a private mount namespace whose /etc/hosts names the sandbox.
            assert self.hosts is not None
            c = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"']
            c += [str(self.hosts)]
        c += [str(self.emulator), "run", "--extensions-dir", str(self.dirs[ext])]
        c += ["--function-dir", str(self.dirs["fn"]), "--handler", "bench_app.handler"]
        c += ["--layer", str(self.dirs["deco"]), "--layer", str(self.dirs["libs"])]
        c += ["--python", str(self.py), "--memory-mb", "256", "--timeout-s", "10"]
        c += ["--invocations", str(invocations), "--function-name", "lmp-bench"]
        for k, v in full.items():
            c += ["--env", f"{k}={v}"]
        return c

    def run_json(
        self, ext: str, variant: str, invocations: int, env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        c = self.cmd(ext, variant, invocations, env or {})
        p = subprocess.run(c + ["--json"], capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            sys.exit(f"emulator failed ({p.returncode}): {p.stderr[-3000:]}")
        doc = json.loads(p.stdout)
        bad = [o for o in doc["invocations"] if o["status"] != "success"]
        if bad:
            exts = json.dumps(doc["shutdown"]["extensions"])[:2000]
            sys.exit(f"{ext}/{variant}: failed invocation {bad[0]}\nextensions: {exts}")
        return doc


def ext_stats(doc: dict[str, Any], ext: str) -> dict[str, Any]:
    name = NOOP_NAME if ext == "noop" else EXT_NAME
    found = [e for e in doc["shutdown"]["extensions"] if e["name"] == name]
    if not found:
        sys.exit(f"extension {name} not in the shutdown report")
    stats = found[0]
    if stats["exit"]["killed_at_deadline"] or stats["exit"]["exited_before_shutdown"]:
        sys.exit(f"{name} did not exit cleanly: {stats['exit']}")
    return stats


# ---- 1. cold start ------------------------------------------------------------------------------


def cold_starts(r: Runner, n: int, exts: list[str]) -> dict[str, list[float]]:
    """spawn -> first /next per run; `<ext> register`: spawn -> register (same runs)."""
    out: dict[str, list[float]] = {}
    for ext in exts:
        out[ext] = []
        out[f"{ext} register"] = []
    for i in range(n):
        # Alternate the order so drift on the shared machine hits all alike.
        for ext in exts if i % 2 == 0 else list(reversed(exts)):
            stats = ext_stats(r.run_json(ext, "lmp", 1), ext)
            out[ext].append(stats["spawn_to_first_next"])
            out[f"{ext} register"].append(stats["spawn_to_register"])
    return out


# ---- 2. RSS over many invocations ------------------------------------------------------------


def status_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[k] = int(v.split()[0])
    return out


def find_pid(exe: Path, parent: int, timeout: float) -> int:
    """The process running `exe` started by `parent` (not one left over from an earlier run)."""
    deadline = time.monotonic() + timeout
    target = str(exe.resolve())
    while time.monotonic() < deadline:
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if os.readlink(d / "exe") != target:
                        continue
                    stat = (d / "stat").read_text()
                    # Field 4 (after the parenthesised command name) is the parent pid.
                    if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                        return int(d.name)
                except (OSError, ValueError, IndexError):
                    continue
        time.sleep(0.005)
    sys.exit(f"no process runs {exe}")


def rss_run(r: Runner, ext: str, n: int, checkpoints: list[int]) -> dict[str, Any]:
    sync = Path(tempfile.mkdtemp(prefix="sync-", dir=OUT))
    c = r.cmd(ext, "lmp", n, {"BENCH_SYNC_DIR": str(sync)})
    exe = r.dirs[ext] / (NOOP_NAME if ext == "noop" else EXT_NAME)
    p = subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    res: dict[str, Any] = {"checkpoints": {}}
    try:
        pid = find_pid(exe, p.pid, 30)
        deadline = time.monotonic() + 30
        while not (sync / "ready").exists():
            if time.monotonic() > deadline or p.poll() is not None:
                sys.exit("the function never reached its import")
            time.sleep(0.005)
        # Every extension called /next and the runtime is importing the function: idle.
        time.sleep(0.2)
        res["idle"] = status_kib(pid)
        (sync / "go").touch()
        t0 = time.monotonic()
        pat = re.compile(r"^invoke (\d+)/\d+: (\w+)")
        assert p.stderr is not None
        tail: list[str] = []
        for line in p.stderr:
            tail = (tail + [line])[-20:]
            m = pat.match(line)
            if not m:
                continue
            k = int(m.group(1))
            if m.group(2) != "success":
                sys.exit(f"{ext}: invocation {k}: {line.strip()}")
            if k in checkpoints:
                res["checkpoints"][k] = status_kib(pid)
            if k == n:
                res["seconds"] = time.monotonic() - t0
        p.wait(120)
        if p.returncode != 0 or set(res["checkpoints"]) != set(checkpoints):
            sys.exit(f"{ext}: RSS run incomplete (exit {p.returncode}):\n{''.join(tail)}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        shutil.rmtree(sync, ignore_errors=True)
    return res


# ---- 3. post-runtime per flush strategy --------------------------------------------------------


def post_runtime(r: Runner, n: int) -> dict[str, dict[str, Any]]:
    out = {}
    runs = [("noop", "-")] + [("lmp", m) for m in ("end", "periodic:1", "adaptive")]
    for ext, mode in runs:
        t0 = time.monotonic()
        env = {} if ext == "noop" else {"LMP_FLUSH": mode}
        doc = r.run_json(ext, "lmp", n, env)
        stats = ext_stats(doc, ext)
        out[f"{ext} {mode}"] = {
            "post": stats["post_runtime"],
            "seconds": time.monotonic() - t0,
            "shutdown_to_exit": stats["exit"]["exit_after_shutdown"],
        }
    return out


# ---- 4. added handler latency -----------------------------------------------------------------

VARIANTS = [
    ("bare", "noop", "no metrics (the handler alone)"),
    ("lmp", "lmp", "`@memory_profile` + this extension (defaults)"),
    ("boto3", "noop", "synchronous boto3 `put_metric_data` in the handler"),
    ("tutorial", "noop", "tutorial tracemalloc decorator, as written"),
    ("powertools", "noop", "Powertools Metrics, EMF flush (`log_metrics`)"),
]


def handler_latency(r: Runner, n: int, rounds: int, warmup: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {v: [] for v, _, _ in VARIANTS}
    for rnd in range(rounds):
        order = VARIANTS if rnd % 2 == 0 else list(reversed(VARIANTS))
        for variant, ext, _ in order:
            doc = r.run_json(ext, variant, n + warmup)
            us = [o["response"]["ns"] / 1000 for o in doc["invocations"]]
            out[variant].extend(us[warmup:])
    return out


# ---- 5. criterion -----------------------------------------------------------------------------

UNIT_S = {"ps": 1e-12, "ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
UNIT_T = {"elem/s": 1.0, "Kelem/s": 1e3, "Melem/s": 1e6, "Gelem/s": 1e9}


def criterion(measure_s: int) -> list[tuple[str, float, float]]:
    """(name, seconds per iteration, elements per second) from benches/pipeline.rs."""
    env = dict(os.environ)
    # The bench profile inherits release's LTO: a full LTO build of the SDK takes many minutes
    # on 2 cores, so the benches build without it (same opt-level "s").
    # Its own target dir: the bench build neither waits for nor overwrites target/release.
    env.update(
        CARGO_PROFILE_BENCH_LTO="false",
        CARGO_PROFILE_BENCH_CODEGEN_UNITS="16",
        CARGO_TARGET_DIR=str(OUT / "target"),
    )
    cmd = ["cargo", "bench", "-q", "--bench", "pipeline", "--"]
    cmd += ["--warm-up-time", "1", "--measurement-time", str(measure_s)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    (OUT / "criterion.txt").write_text(p.stdout + p.stderr)
    if p.returncode != 0:
        sys.exit(f"cargo bench failed: {p.stderr[-3000:]}")
    rx = re.compile(
        r"^(\S+)\s+time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]\s*\n\s*thrpt:\s+\[\S+ \S+ (\S+) (\S+)",
        re.M,
    )
    text = re.sub(r"^(\S+)\n\s+time:", r"\1 time:", p.stdout, flags=re.M)
    return [
        (m[1], float(m[2]) * UNIT_S[m[3]], float(m[4]) * UNIT_T[m[5]]) for m in rx.finditer(text)
    ]


# ---- report -----------------------------------------------------------------------------------


def mb(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def labels(present: dict[str, Any], floor: str = "do-nothing extension") -> list[tuple[str, str]]:
    rows = [
        ("noop", floor),
        ("lmp", "lambda-memory-profiler"),
        (HOSTS_EXT, "lambda-memory-profiler, `sandbox.localdomain` in /etc/hosts"),
    ]
    return [(k, v) for k, v in rows if k in present]


def targets(
    cold: dict[str, list[float]],
    rss: dict[str, dict[str, Any]],
    n_rss: int,
    post: dict[str, dict[str, Any]],
    lat: dict[str, list[float]],
    sizes: dict[str, int],
) -> list[str]:
    """The issue's targets against this run's figures."""
    init_ratio = median(cold["lmp"]) / median(cold["noop"])
    idle = rss["lmp"]["idle"]["VmRSS"] / 1024
    hosts_ratio = median(cold[HOSTS_EXT]) / median(cold["noop"]) if HOSTS_EXT in cold else 0
    hosts_idle = rss[HOSTS_EXT]["idle"]["VmRSS"] / 1024 if HOSTS_EXT in rss else 0
    end = rss["lmp"]["checkpoints"][n_rss]["VmRSS"] / 1024
    at_1k = rss["lmp"]["checkpoints"][1000]["VmRSS"] / 1024
    post_med = median(post["lmp adaptive"]["post"])
    base = median(lat["bare"])
    ours = median(lat["lmp"]) - base
    naive = median(lat["boto3"]) - base
    zip_mb = sizes["zip"] / 1e6

    def ok(met: bool) -> str:
        return "met" if met else "**missed**"

    return [
        "| target | this run | |",
        "|---|---|---|",
        f"| init ≤ 1.5× the do-nothing extension | {init_ratio:.2f}× | {ok(init_ratio <= 1.5)} |",
        *(
            [
                f"| the same, `sandbox.localdomain` in /etc/hosts | {hosts_ratio:.2f}× | "
                f"{ok(hosts_ratio <= 1.5)} |"
            ]
            if hosts_ratio
            else []
        ),
        f"| RSS idle ≤ 6 MB | {idle:.1f} MB | {ok(idle <= 6)} |",
        *(
            [
                f"| the same, `sandbox.localdomain` in /etc/hosts | {hosts_idle:.1f} MB | "
                f"{ok(hosts_idle <= 6)} |"
            ]
            if hosts_idle
            else []
        ),
        f"| RSS after {n_rss:,} invocations ≤ 10 MB, flat | {end:.1f} MB "
        f"({end - at_1k:+.1f} MB since 1,000) | {ok(end <= 10)} |",
        f"| post-runtime median < 1 ms, default strategy | {post_med:.2f} ms | "
        f"{ok(post_med < 1)} |",
        f"| added handler latency ≥ 50× less than boto3 | {naive / ours:.0f}× less "
        f"({ours:.0f} µs vs {naive:,.0f} µs) | {ok(naive / ours >= 50)} |",
        f"| layer zip ≤ 4 MB | {zip_mb:.2f} MB | {ok(zip_mb <= 4)} |",
    ]


def render(
    meta: dict[str, Any],
    cold: dict[str, list[float]],
    rss: dict[str, dict[str, Any]],
    n_rss: int,
    post: dict[str, dict[str, Any]],
    lat: dict[str, list[float]],
    crit: list[tuple[str, float, float]],
    sizes: dict[str, int],
) -> str:
    L: list[str] = []
    L.append(
        f"Run on {meta['date']}, {meta['cpus']} CPUs ({meta['cpu']}), load average "
        f"{meta['load_before']} before / {meta['load_after']} after, Python {meta['python']}, "
        f"whole run {meta['minutes']:.1f} min. The machine is shared with other builds; absolute "
        "numbers on Lambda differ — the ratios are the claim."
    )
    L.append("")
    L.extend(targets(cold, rss, n_rss, post, lat, sizes))
    L.append("")
    L.append("### Extension init: spawn → first `/next`")
    L.append("")
    L.append(
        f"{len(cold['lmp'])} cold starts of each, interleaved (the emulator's own timestamps)."
    )
    L.append("")
    L.append(
        "| extension | median ms | min ms | p90 ms | max ms | vs floor (medians) "
        "| spawn → register, median ms | register → first `/next`, median ms |"
    )
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    floor = median(cold["noop"])
    for ext, label in labels(cold, floor="do-nothing extension (floor)"):
        xs = cold[ext]
        reg = cold[f"{ext} register"]
        after = [a - b for a, b in zip(xs, reg)]
        L.append(
            f"| {label} | {median(xs):.2f} | {min(xs):.2f} | {pct(xs, 0.9):.2f} | {max(xs):.2f} "
            f"| {median(xs) / floor:.2f}× | {median(reg):.2f} | {median(after):.2f} |"
        )
    L.append("")
    L.append("### Extension RSS")
    L.append("")
    L.append(
        "Back-to-back invocations of a no-op handler with `@memory_profile` "
        "(default sample rate), "
        f"default extension settings (`cloudwatch` sink to LocalStack, `adaptive` flush). "
        f"{n_rss:,} invocations took {rss['lmp'].get('seconds', 0):.0f} s with the extension. "
        "`/proc/<pid>/status` of the extension, MB (RssAnon = its own heap and stacks)."
    )
    L.append("")
    cps = sorted(rss["lmp"]["checkpoints"])
    L.append(
        "| extension | MB | idle after init | " + " | ".join(f"after {k:,}" for k in cps) + " |"
    )
    L.append("|---|---|" + "---:|" * (len(cps) + 1))
    for ext, label in labels(rss):
        d = rss[ext]
        for key, what in (("VmRSS", "RSS"), ("RssAnon", "RssAnon"), ("VmHWM", "peak (VmHWM)")):
            row = [mb(d["idle"][key])] + [mb(d["checkpoints"][k][key]) for k in cps]
            L.append(f"| {label} | {what} | " + " | ".join(row) + " |")
    L.append("")
    L.append("### Post-runtime time per flush strategy")
    L.append("")
    n_post = len(next(iter(post.values()))["post"])
    L.append(
        f"Time from the runtime's response to the extension's next `/next` (billed as "
        f"`PostRuntimeExtensionsDuration`), {n_post} back-to-back invocations per strategy, "
        "`cloudwatch` sink to LocalStack."
    )
    L.append("")
    L.append(
        "| extension, `LMP_FLUSH` | median ms | p90 ms | p99 ms | max ms "
        "| invocations > 1 ms | run s |"
    )
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    for k, v in post.items():
        xs = v["post"]
        over = sum(1 for x in xs if x > 1.0)
        L.append(
            f"| {k} | {median(xs):.2f} | {pct(xs, 0.9):.2f} | {pct(xs, 0.99):.2f} | {max(xs):.2f} "
            f"| {over} | {v['seconds']:.1f} |"
        )
    L.append("")
    L.append("### Handler latency added by sending the metrics")
    L.append("")
    n_lat = len(lat["bare"])
    L.append(
        f"Time of the wrapped handler measured around it inside the function (wall clock), "
        f"{n_lat} invocations per variant over alternating runs; added = the variant's median "
        "minus the bare handler's. Every variant runs with one extension (this one for its own "
        "row, the do-nothing one otherwise) and sends two figures (peak RSS, duration)."
    )
    L.append("")
    L.append("| variant | median µs | p90 µs | mean µs | added µs (medians) | added vs this |")
    L.append("|---|---:|---:|---:|---:|---:|")
    base = median(lat["bare"])
    ours = median(lat["lmp"]) - base
    for v, _, label in VARIANTS:
        xs = lat[v]
        added = median(xs) - base
        ratio = "—" if v == "bare" else f"{added / ours:.0f}×" if ours > 0 else "n/a"
        L.append(
            f"| {label} | {median(xs):.1f} | {pct(xs, 0.9):.1f} | {statistics.fmean(xs):.1f} | "
            f"{'—' if v == 'bare' else f'{added:.1f}'} | {ratio} |"
        )
    L.append("")
    L.append("### In-process costs (criterion, `benches/pipeline.rs`)")
    L.append("")
    L.append(
        "One core; per element: a datagram, a telemetry record, an invocation (4 events), "
        "a profile. "
        "Built without LTO (the shipped binary has it), same `opt-level`."
    )
    L.append("")
    L.append("| benchmark | time per iteration | per element | elements/s |")
    L.append("|---|---:|---:|---:|")
    for name, secs, thr in crit:
        per = 1 / thr if thr else float("nan")
        L.append(f"| `{name}` | {secs * 1e6:.2f} µs | {per * 1e9:.0f} ns | {thr:,.0f} |")
    L.append("")
    L.append("### Layer")
    L.append("")
    L.append("| artifact | size |")
    L.append("|---|---:|")
    L.append(
        "| `build/layer.zip` (extension + decorator) | "
        f"{sizes['zip'] / 1e6:.2f} MB ({sizes['zip']:,} bytes) |"
    )
    L.append(
        "| `extensions/lambda-memory-profiler` (stripped, x86_64, glibc ≥ 2.17) | "
        f"{sizes['bin'] / 1e6:.2f} MB ({sizes['bin']:,} bytes) |"
    )
    L.append(f"| do-nothing extension, for scale | {sizes['noop'] / 1e6:.2f} MB |")
    return "\n".join(L) + "\n"


def write_benchmarks(body: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    block = f"{BEGIN}\n{body}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Extension\n\n" + block + "\n"
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emulator", type=Path, default=ROOT / "target/release/lambda-emulator")
    ap.add_argument("--python", type=Path, default=ROOT / ".venv/bin/python")
    ap.add_argument("--cold-starts", type=int, default=40)
    ap.add_argument("--invocations", type=int, default=10_000, help="RSS run length")
    ap.add_argument("--flush-invocations", type=int, default=500)
    ap.add_argument("--latency-invocations", type=int, default=150, help="per variant and round")
    ap.add_argument("--latency-rounds", type=int, default=2)
    ap.add_argument("--criterion-seconds", type=int, default=3)
    ap.add_argument("--skip-criterion", action="store_true")
    ap.add_argument(
        "--no-hosts-variant",
        action="store_true",
        help="skip the runs with sandbox.localdomain in a private /etc/hosts",
    )
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = ap.parse_args()
    # A TERM runs the clean-ups (LocalStack's process group) like an error does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    py = args.python.absolute()
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.machine(),
        ),
        "load_before": f"{os.getloadavg()[0]:.2f}",
        "python": subprocess.run(
            [str(py), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
        ).stdout.strip(),
    }
    dirs = prepare(py)
    dirs[HOSTS_EXT] = dirs["lmp"]
    hosts = None if args.no_hosts_variant else hosts_file()
    with localstack() as endpoint:
        r = Runner(args.emulator.absolute(), py, dirs, endpoint, hosts)
        log(f"LocalStack at {endpoint}; cold starts x{args.cold_starts}")
        exts = ["noop", "lmp"] + ([HOSTS_EXT] if hosts else [])
        cold = cold_starts(r, args.cold_starts, exts)
        log(f"RSS over {args.invocations} invocations")
        # The last reading after invocation N-1: right after the N-th the emulator shuts the
        # environment down, and the extension may already be gone (a zombie has no VmRSS).
        last = args.invocations - 1
        checkpoints = sorted({100, 1000, args.invocations // 2, last})
        rss = {ext: rss_run(r, ext, args.invocations, checkpoints) for ext in exts}
        log("post-runtime per flush strategy")
        post = post_runtime(r, args.flush_invocations)
        log("handler latency")
        lat = handler_latency(r, args.latency_invocations, args.latency_rounds, warmup=5)
    crit: list[tuple[str, float, float]] = []
    if not args.skip_criterion:
        log("criterion")
        crit = criterion(args.criterion_seconds)
    sizes = {
        "zip": (ROOT / "build" / "layer.zip").stat().st_size,
        "bin": (LAYER / "extensions" / EXT_NAME).stat().st_size,
        "noop": (dirs["noop"] / NOOP_NAME).stat().st_size,
    }
    meta["load_after"] = f"{os.getloadavg()[0]:.2f}"
    meta["minutes"] = (time.monotonic() - started) / 60
    body = render(meta, cold, rss, max(checkpoints), post, lat, crit, sizes)
    (OUT / "extension.md").write_text(body)
    raw = {"meta": meta, "cold": cold, "rss": rss, "post": post, "latency": lat, "criterion": crit}
    (OUT / "extension.json").write_text(json.dumps(raw, indent=1))
    if not args.no_write:
        write_benchmarks(body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
