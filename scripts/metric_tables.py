"""The metric tables that must agree, and the LMP_DIMENSIONS values the extension accepts, read
from the sources: the `metric_table!` of src/metrics.rs, the README's metric table, the Rust
layer's fallback EMF metrics, and src/config/values.rs. Used by check-alarms.py (same folder).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path


def metric_table(metrics_rs: Path) -> dict[str, str]:
    """Metric name -> unit, from the `metric_table!` invocation of src/metrics.rs."""
    text = metrics_rs.read_text()
    block = re.search(r"^metric_table!\s*\{(.*?)^\}", text, flags=re.MULTILINE | re.DOTALL)
    if not block:
        raise SystemExit(f"check-alarms.py: no metric_table! block in {metrics_rs}")
    return dict(re.findall(r"^\s*([A-Za-z]+),\s*([A-Za-z]+),", block.group(1), re.MULTILINE))


def readme_table(readme: Path) -> dict[str, str]:
    return dict(
        re.findall(r"^\| `([A-Za-z]+)` \| ([A-Za-z]+) \|", readme.read_text(), re.MULTILINE)
    )


def rust_layer_metrics(record_rs: Path) -> dict[str, str]:
    """Metric name -> unit of the Rust layer's fallback EMF line: the `EMF_METRICS` table of
    rust-layer/src/record.rs (rows `("Name", Unit::Unit, figure)`)."""
    text = record_rs.read_text()
    block = re.search(r"^const EMF_METRICS\b[^=]*=\s*&\[(.*?)^\];", text, re.MULTILINE | re.DOTALL)
    if not block:
        raise SystemExit(f"check-alarms.py: no EMF_METRICS table in {record_rs}")
    rows = dict(re.findall(r'^\s*\(\s*"([A-Za-z]+)",\s*Unit::([A-Za-z]+),', block.group(1), re.M))
    if not rows:
        raise SystemExit(f"check-alarms.py: EMF_METRICS of {record_rs} has no rows")
    return rows


def table_errors(root: Path, readme_md: Path) -> list[str]:
    """The extension's metric table and the README's name the same metrics; every metric of the
    Rust layer's fallback line is in the README's, with the same unit."""
    errors: list[str] = []
    table = metric_table(root / "src/metrics.rs")
    readme = readme_table(readme_md)
    for name in sorted(set(table) ^ set(readme)):
        where = "src/metrics.rs" if name in table else "the README table"
        errors.append(f"metric {name} is only in {where}")
    for name, unit in rust_layer_metrics(root / "rust-layer/src/record.rs").items():
        if name not in readme:
            errors.append(f"rust-layer/src/record.rs: metric {name} is not in the README table")
        elif readme[name] != unit:
            errors.append(
                f"rust-layer/src/record.rs: metric {name} in {unit}, the README table says "
                f"{readme[name]}"
            )
    return errors


def dimension_values(config_rs: Path) -> list[str]:
    """Every LMP_DIMENSIONS value the extension accepts: FunctionName (required) plus any subset
    of the other names its parser matches."""
    text = config_rs.read_text()
    start = text.find("pub fn parse_dimensions(")
    end = text.find("\n}\n", start + 1)
    if start < 0:
        raise SystemExit(f"check-alarms.py: no parse_dimensions in {config_rs}")
    names = re.findall(r'"([A-Za-z]+)"\s*=>', text[start:end])
    if "FunctionName" not in names:
        raise SystemExit(f"check-alarms.py: LMP_DIMENSIONS parser without FunctionName: {names}")
    others = [n for n in names if n != "FunctionName"]
    return [
        ",".join(["FunctionName", *combo])
        for r in range(len(others) + 1)
        for combo in itertools.combinations(others, r)
    ]
