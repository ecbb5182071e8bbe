"""scripts/check-alarms.py against stand-ins of the extension (stub_extension.py): it passes when
the {FunctionName} set the template reads is published under every LMP_DIMENSIONS value, through
both sinks, and names the value and the reads when it is not. (`make check-template` runs the
same check against the real extension that `sam build` staged.)"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS_PYTHON = ROOT / ".venv-tools" / "bin" / "python"
STUB = Path(__file__).resolve().parent / "stub_extension.py"


def check(tmp_path: Path, mode: str, *extra: str) -> subprocess.CompletedProcess:
    if not TOOLS_PYTHON.is_file():
        pytest.fail(f"{TOOLS_PYTHON} missing: run `make tools`")
    # The check starts the extension with a clean environment: a wrapper fixes the interpreter.
    wrapper = tmp_path / f"extension-{mode}"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {STUB} {mode}\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return subprocess.run(
        [
            str(TOOLS_PYTHON),
            str(ROOT / "scripts" / "check-alarms.py"),
            "--extension",
            str(wrapper),
            "--parameter-overrides",
            "ProfiledFunctionNames=lambda-memory-profiler-example,orders",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_passes_when_every_value_publishes_the_function_name_set(tmp_path):
    done = check(tmp_path, "both")
    assert done.returncode == 0, done.stderr
    both = "{FunctionName} and {FunctionName, FunctionVersion}"
    assert f"FunctionName,FunctionVersion via cloudwatch: {both}" in done.stdout
    assert f"FunctionName,FunctionVersion via emf: {both}" in done.stdout


def test_names_the_value_whose_sets_the_template_does_not_read(tmp_path):
    done = check(tmp_path, "combined")
    assert done.returncode == 1
    only = "only {FunctionName, FunctionVersion}"
    assert (
        f"LMP_DIMENSIONS=FunctionName,FunctionVersion the extension publishes {only}" in done.stderr
    )
    assert "LMP_SINK=cloudwatch, emf" in done.stderr
    assert "alarm lambda-memory-profiler-example-leak: LeakSuspected" in done.stderr
    assert "and 43 more" in done.stderr
    assert "LMP_DIMENSIONS=FunctionName " not in done.stderr


def test_a_tolerated_gap_warns_and_says_when_it_is_gone(tmp_path):
    tolerate = ("--tolerate-unpublished", "FunctionName,FunctionVersion")
    done = check(tmp_path, "combined", *tolerate)
    assert done.returncode == 0, done.stderr
    assert "WARNING: 46 metric reads in {FunctionName}" in done.stderr
    assert "ok, 1 warnings above" in done.stdout
    done = check(tmp_path, "both", *tolerate)
    assert done.returncode == 0, done.stderr
    assert "is no longer needed" in done.stderr
    done = check(tmp_path, "both", "--tolerate-unpublished", "FunctionVersion")
    assert done.returncode == 1
    assert "not an LMP_DIMENSIONS value" in done.stderr


def tables(root: Path) -> subprocess.CompletedProcess:
    """`--tables-only` on a source tree: plain Python, no template and no extension."""
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "check-alarms.py"),
            "--tables-only",
            "--root",
            str(root),
            "--readme",
            str(root / "README.md"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_rust_layers_fallback_metrics_must_be_in_the_readme_table(tmp_path):
    done = tables(ROOT)
    assert done.returncode == 0, done.stderr
    assert "holds the Rust layer's 7" in done.stdout
    for rel in ("README.md", "src/metrics.rs", "rust-layer/src/record.rs"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((ROOT / rel).read_text())
    record = tmp_path / "rust-layer/src/record.rs"
    text = record.read_text()
    record.write_text(
        text.replace('("ColdStart", Unit::Count,', '("ColdStarts", Unit::Count,').replace(
            '("Duration", Unit::Milliseconds,', '("Duration", Unit::Bytes,'
        )
    )
    done = tables(tmp_path)
    assert done.returncode == 1
    assert "metric ColdStarts is not in the README table" in done.stderr
    assert "metric Duration in Bytes, the README table says Milliseconds" in done.stderr
