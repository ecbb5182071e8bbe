"""Post-runtime time of functions the decorator does not measure, against a do-nothing extension.

An undecorated Python handler (the real awslambdaric runtime) and a Node.js custom runtime, each
run under the project's emulator for N invocations with the layer's extension (build/layer-x86_64,
as `make layer` ships it) in every flush mode, and with the do-nothing extension
(bench/noop_extension.rs) as the floor. Post-runtime time is the emulator's measure: runtime
response -> the extension's `/next` (billed time). EMF sink: no endpoint in the way.

    python bench/undecorated_wait.py [--invocations 200]

Writes the table into BENCHMARKS.md between the `undecorated-bench` markers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench" / "undecorated"
LAYER = ROOT / "build" / "layer-x86_64"
EXT = "lambda-memory-profiler"
BEGIN = "<!-- undecorated-bench:begin -->"
END = "<!-- undecorated-bench:end -->"

PLAIN = """
_kept = []

def handler(event, context):
    _kept.append(bytearray(64 * 1024))
    return {"n": len(_kept)}
"""

NODE_RUNTIME = (ROOT / "tests" / "fixtures" / "node_runtime.js").read_text()


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        return u.getsockname()[1]


def prepare() -> dict[str, Path]:
    shipped = LAYER / "extensions" / EXT
    if not shipped.exists():
        sys.exit(f"{shipped} missing: run `make layer` first")
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "ext-lmp").mkdir(parents=True)
    shutil.copy2(shipped, OUT / "ext-lmp" / EXT)
    (OUT / "ext-noop").mkdir()
    subprocess.run(
        ["rustc", "--edition", "2021", "-C", "opt-level=s", "-C", "strip=symbols", "-o"]
        + [str(OUT / "ext-noop" / "noop-extension"), str(ROOT / "bench" / "noop_extension.rs")],
        check=True,
    )
    fn = OUT / "fn"
    fn.mkdir()
    (fn / "app.py").write_text(PLAIN)
    (fn / "runtime.js").write_text(NODE_RUNTIME)
    return {"lmp": OUT / "ext-lmp", "noop": OUT / "ext-noop", "fn": fn}


def post_runtime(
    emulator: Path, py: Path, dirs: dict[str, Path], ext: str, kind: str, flush: str, n: int
) -> list[float]:
    cmd = [str(emulator), "run", "--extensions-dir", str(dirs[ext])]
    cmd += ["--function-dir", str(dirs["fn"]), "--handler", "app.handler"]
    cmd += ["--python", str(py), "--memory-mb", "256", "--invocations", str(n), "--json"]
    if kind == "node":
        cmd += ["--runtime-command", f"node {dirs['fn'] / 'runtime.js'}"]
    env = {"LMP_SINK": "emf", "LMP_FLUSH": flush, "LMP_INTAKE_PORT": str(free_port())}
    for k, v in env.items():
        cmd += ["--env", f"{k}={v}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        sys.exit(f"{ext}/{kind}/{flush}: emulator exit {p.returncode}: {p.stderr[-2000:]}")
    doc = json.loads(p.stdout)
    name = EXT if ext == "lmp" else "noop-extension"
    stats = [e for e in doc["shutdown"]["extensions"] if e["name"] == name][0]
    if stats["exit"]["exited_before_shutdown"] or stats["exit"]["killed_at_deadline"]:
        sys.exit(f"{name} did not exit cleanly: {stats['exit']}")
    return [float(x) for x in stats["post_runtime"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--invocations", type=int, default=200)
    ap.add_argument("--emulator", type=Path, default=ROOT / "target/release/lambda-emulator")
    ap.add_argument("--python", type=Path, default=Path(sys.executable))
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args()
    dirs = prepare()
    n = args.invocations
    rows = []
    for kind, label in (("python", "undecorated Python handler"), ("node", "Node.js runtime")):
        floor = post_runtime(args.emulator, args.python, dirs, "noop", kind, "end", n)
        rows.append((label, "do-nothing extension", floor, None))
        for flush in ("end", "periodic:1", "adaptive"):
            got = post_runtime(args.emulator, args.python, dirs, "lmp", kind, flush, n)
            rows.append((label, f"this extension, `LMP_FLUSH={flush}`", got, floor))
    lines = [
        f"{n} invocations each, post-runtime time in ms (runtime response -> the extension's "
        "`/next`), `python bench/undecorated_wait.py`:",
        "",
        "| function | extension | median | p99 | max "
        "| median − floor | p99 − floor | max − floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, ext, xs, floor in rows:
        med, p99, top = statistics.median(xs), pct(xs, 0.99), max(xs)
        if floor is None:
            d_med = d_p99 = d_top = "—"
        else:
            d_med = f"{med - statistics.median(floor):+.3f}"
            d_p99 = f"{p99 - pct(floor, 0.99):+.3f}"
            d_top = f"{top - max(floor):+.3f}"
        lines.append(
            f"| {label} | {ext} | {med:.3f} | {p99:.3f} | {top:.3f} | {d_med} | {d_p99} | {d_top} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    bench = ROOT / "BENCHMARKS.md"
    text = bench.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = f"{head}{BEGIN}\n{table}\n{END}{tail}"
    else:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{table}\n{END}\n"
    bench.write_text(text)


if __name__ == "__main__":
    main()
