"""check-alarms.py: every alarm and dashboard widget of template.yaml reads a metric the extension
publishes, in a dimension set it publishes under every LMP_DIMENSIONS value.

Where each side comes from:

- the template, expanded for the given parameters (Fn::ForEach, conditions, Fn::Sub) by SAM
  CLI's own AWS::LanguageExtensions processor, so one check covers every profiled function;
- metric names: the metric table of src/metrics.rs (`metric_table!`), which must also be the
  README's metric table; the Rust layer's fallback EMF line (`EMF_METRICS` of
  rust-layer/src/record.rs) may only use names of that table, with their units;
- the LMP_DIMENSIONS values: FunctionName with any subset of the other dimension names that
  src/config/values.rs accepts (today `FunctionName` and `FunctionName,FunctionVersion`);
- the dimension sets: observed, not inferred from the code. The built extension (`--extension`,
  by default the one `sam build` staged) runs once per LMP_DIMENSIONS value and sink against a
  stand-in of the Extensions and Telemetry APIs (register, one INVOKE and its platform.report,
  SHUTDOWN): with LMP_SINK=emf the sets are read from its EMF lines, with LMP_SINK=cloudwatch
  from the PutMetricData requests it sends to a local endpoint (rpc-v2-cbor, decoded here).
  Dimensions are fixed per environment, so the sets seen on the metrics of one invocation are
  the sets of every metric.

`--tables-only` checks the metric tables alone (no template, no extension: plain python3).

`--dump-rules` prints the alarms' evaluation rules (statistic, period, threshold, evaluation
periods, datapoints, missing data, the paging topic) as JSON, without the probe: the
alarm-evaluation test (tests/alarms) reads them.

Runs with the tools venv (`.venv-tools`: SAM CLI's YAML loader and language-extensions
processor). Usage:

  check-alarms.py [--template T] [--readme R] [--root DIR] [--extension BIN]
                  [--parameter-overrides K=V ...] [--dump-rules] [--tables-only]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# The probe of the built extension lives beside this file (it is also loaded as a module by
# check-template.py, from any working directory).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from extension_probe import published_sets  # noqa: E402
from metric_tables import (  # noqa: E402, F401 (readme_table: check-template.py reads it here)
    dimension_values,
    metric_table,
    readme_table,
    rust_layer_metrics,
    table_errors,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXTENSION = ROOT / "build/sam/MemoryProfilerLayer/extensions/lambda-memory-profiler"
# Topic ARNs given to the expansion so that each alarm's actions show which topic it notifies.
PAGE_TOPIC = "arn:aws:sns:us-east-1:123456789012:check-alarms-pages"
WARNING_TOPIC = "arn:aws:sns:us-east-1:123456789012:check-alarms-warnings"
SEVERITY_PARAMETERS = {"AlarmTopicArn": PAGE_TOPIC, "WarningTopicArn": WARNING_TOPIC}


# ---- the template -------------------------------------------------------------------------------


def parameter_values(template: dict, overrides: dict[str, str]) -> dict[str, Any]:
    """Every parameter's value: the override, else the default; lists split as CloudFormation
    splits a CommaDelimitedList."""
    values: dict[str, Any] = {}
    for name, spec in template.get("Parameters", {}).items():
        raw = overrides.get(name, spec.get("Default"))
        if raw is None:
            continue
        if spec.get("Type") == "CommaDelimitedList":
            values[name] = [s.strip() for s in str(raw).split(",")]
        elif spec.get("Type") == "Number":
            values[name] = float(raw) if "." in str(raw) else int(raw)
        else:
            values[name] = str(raw)
    unknown = set(overrides) - set(template.get("Parameters", {}))
    if unknown:
        raise SystemExit(f"check-alarms.py: unknown parameters {sorted(unknown)}")
    return values


def expand(template_path: Path, overrides: dict[str, str]) -> tuple[dict, dict[str, Any]]:
    """The template as CloudFormation would see it after AWS::LanguageExtensions, with every
    intrinsic that needs no deployed resource resolved; and the parameter values used."""
    from samcli.lib.cfn_language_extensions import PseudoParameterValues, process_template
    from samcli.yamlhelper import yaml_parse

    template = yaml_parse(template_path.read_text())
    values = parameter_values(template, overrides)
    pseudo = PseudoParameterValues(
        region="us-east-1", account_id="123456789012", stack_name="lambda-memory-profiler"
    )
    return process_template(template, parameter_values=values, pseudo_parameters=pseudo), values


def resources(expanded: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in expanded["Resources"].items() if v.get("Type") == kind}


def severity(props: dict) -> str:
    """`page`, `warning` or `none`, from the topics the alarm notifies (both action lists must
    agree)."""
    found = set()
    for key in ("AlarmActions", "OKActions", "InsufficientDataActions"):
        for arn in props.get(key, []):
            found.add({PAGE_TOPIC: "page", WARNING_TOPIC: "warning"}.get(arn, f"other:{arn}"))
    if not found:
        return "none"
    return found.pop() if len(found) == 1 else "mixed:" + ",".join(sorted(found))


def alarm_rule(logical_id: str, props: dict) -> dict:
    """One alarm's evaluation rule, single-metric and metric-math alike: its queries (metric,
    dimensions, statistic, period) and, for metric math, the expression that returns data."""
    queries, expression = [], None
    if "MetricName" in props:
        queries.append(
            {
                "id": "m",
                "namespace": props.get("Namespace"),
                "metric": props["MetricName"],
                "dimensions": {d["Name"]: d["Value"] for d in props.get("Dimensions", [])},
                "stat": props.get("Statistic") or props.get("ExtendedStatistic"),
                "period": int(props["Period"]),
                "return": True,
            }
        )
    for q in props.get("Metrics", []):
        if "MetricStat" in q:
            ms = q["MetricStat"]
            queries.append(
                {
                    "id": q["Id"],
                    "namespace": ms["Metric"].get("Namespace"),
                    "metric": ms["Metric"]["MetricName"],
                    "dimensions": {
                        d["Name"]: d["Value"] for d in ms["Metric"].get("Dimensions", [])
                    },
                    "stat": ms["Stat"],
                    "period": int(ms["Period"]),
                    "return": q.get("ReturnData", True),
                }
            )
        elif "Expression" in q:
            expression = {
                "id": q["Id"],
                "expression": q["Expression"],
                "return": q.get("ReturnData", True),
            }
    functions = {q["dimensions"].get("FunctionName") for q in queries}
    function = functions.pop() if len(functions) == 1 else sorted(map(str, functions))
    name = props["AlarmName"]
    return {
        "logical_id": logical_id,
        "name": name,
        "function": function,
        # The alarm's name without its function: the same for every profiled function.
        "kind": name[len(function) + 1 :] if isinstance(function, str) else name,
        "severity": severity(props),
        "description": props.get("AlarmDescription", ""),
        "queries": queries,
        "expression": expression,
        "threshold": float(props["Threshold"]),
        "comparison": props["ComparisonOperator"],
        "evaluation_periods": int(props["EvaluationPeriods"]),
        "datapoints_to_alarm": int(props.get("DatapointsToAlarm", props["EvaluationPeriods"])),
        "treat_missing_data": props.get("TreatMissingData", "missing"),
    }


def dashboard_metrics(body: str) -> list[dict]:
    """The metrics of every metric widget: [namespace, name, dim, value, ..., {options}], where
    "..." repeats the previous row's field (CloudWatch's shorthand)."""
    doc = json.loads(body)
    out, previous = [], []
    for widget in doc["widgets"]:
        if widget.get("type") != "metric":
            continue
        for row in widget["properties"].get("metrics", []):
            fields = [f for f in row if not isinstance(f, dict)]
            options = next((f for f in row if isinstance(f, dict)), {})
            if "expression" in options:
                out.append({"expression": options["expression"], "title": widget["properties"]})
                continue
            fields = [previous[i] if f == "..." else f for i, f in enumerate(fields)]
            previous = fields
            out.append(
                {
                    "namespace": fields[0],
                    "metric": fields[1],
                    "dimensions": dict(zip(fields[2::2], fields[3::2])),
                    "title": widget["properties"].get("title", ""),
                }
            )
    return out


def dashboard_alarm_arns(body: str) -> list[str]:
    doc = json.loads(body)
    return [
        arn
        for widget in doc["widgets"]
        if widget.get("type") == "alarm"
        for arn in widget["properties"].get("alarms", [])
    ]


# ---- the check ----------------------------------------------------------------------------------


def braces(sets: Any) -> str:
    """Dimension sets as `{A, B} and {A}`."""
    return " and ".join(
        "{" + ", ".join(sorted(s)) + "}" for s in sorted(sets, key=lambda s: (len(s), sorted(s)))
    )


def parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        for pair in item.split():
            key, sep, value = pair.partition("=")
            if not sep:
                raise SystemExit(f"check-alarms.py: override {pair!r} is not KEY=VALUE")
            out[key] = value
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--template", type=Path, default=ROOT / "template.yaml")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="the source tree (src/metrics.rs, src/config/values.rs)",
    )
    ap.add_argument("--extension", type=Path, default=DEFAULT_EXTENSION)
    ap.add_argument("--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--tolerate-unpublished",
        action="append",
        default=[],
        metavar="LMP_DIMENSIONS",
        help="report reads this LMP_DIMENSIONS value does not publish as a warning, not an "
        "error (to land the template before the extension change; says when it is no longer "
        "needed)",
    )
    ap.add_argument(
        "--dump-rules", action="store_true", help="print the alarm rules as JSON and exit"
    )
    ap.add_argument(
        "--tables-only",
        action="store_true",
        help="check the metric tables (src/metrics.rs, the README, rust-layer's fallback line) "
        "and exit",
    )
    args = ap.parse_args()

    errors: list[str] = table_errors(args.root, args.readme)
    if args.tables_only:
        for e in errors:
            print(f"check-alarms.py: {e}", file=sys.stderr)
        if not errors:
            rust = len(rust_layer_metrics(args.root / "rust-layer/src/record.rs"))
            print(
                f"check-alarms.py: ok: the README table is src/metrics.rs's "
                f"({len(readme_table(args.readme))} metrics) and holds the Rust layer's {rust}"
            )
        return 1 if errors else 0

    overrides = {**SEVERITY_PARAMETERS, **parse_overrides(args.parameter_overrides)}
    expanded, values = expand(args.template, overrides)
    functions = values["ProfiledFunctionNames"]
    alarms = {
        lid: alarm_rule(lid, r["Properties"])
        for lid, r in resources(expanded, "AWS::CloudWatch::Alarm").items()
    }
    if args.dump_rules:
        json.dump(
            {"functions": functions, "parameters": values, "alarms": list(alarms.values())},
            sys.stdout,
            indent=1,
            default=str,
        )
        print()
        return 0

    table = metric_table(args.root / "src/metrics.rs")
    if not args.extension.is_file():
        print(
            f"check-alarms.py: {args.extension} missing: run `sam build` (make check-template) "
            "or pass --extension build/layer-x86_64/extensions/lambda-memory-profiler",
            file=sys.stderr,
        )
        return 1
    dim_values = dimension_values(args.root / "src/config/values.rs")
    sets = published_sets(args.extension, dim_values)

    # Every metric read: (where, namespace, metric, dimensions).
    reads: list[tuple[str, Any, str, dict]] = []
    for rule in alarms.values():
        for q in rule["queries"]:
            reads.append((f"alarm {rule['name']}", q["namespace"], q["metric"], q["dimensions"]))
    alarm_names = {r["name"] for r in alarms.values()}
    for lid, res in resources(expanded, "AWS::CloudWatch::Dashboard").items():
        body = res["Properties"]["DashboardBody"]
        if not isinstance(body, str):
            errors.append(f"{lid}: dashboard body is not resolved to a string: {str(body)[:200]}")
            continue
        try:
            widgets = dashboard_metrics(body)
            arns = dashboard_alarm_arns(body)
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
            errors.append(f"{lid}: dashboard body is not valid: {e!r}")
            continue
        for w in widgets:
            if "expression" in w:
                errors.append(f"{lid}: expression widgets are not checked: {w['expression']}")
                continue
            reads.append(
                (
                    f"dashboard {lid} widget {w['title']!r}",
                    w["namespace"],
                    w["metric"],
                    w["dimensions"],
                )
            )
        for arn in arns:
            if arn.rsplit(":", 1)[-1] not in alarm_names:
                errors.append(
                    f"{lid}: alarm widget names {arn}, which is not an alarm of the template"
                )
        shown = {w["dimensions"].get("FunctionName") for w in widgets if "dimensions" in w}
        if len(shown) != 1:
            errors.append(
                f"{lid}: one dashboard per function, but it shows {sorted(map(str, shown))}"
            )

    namespace = values["MetricNamespace"]
    # Dimension-set mismatches, grouped: (set read, LMP_DIMENSIONS value, published) -> reads.
    unpublished: dict[tuple[str, str, str], dict[str, list[str]]] = {}
    for where, ns, metric, dims in reads:
        if ns != namespace:
            errors.append(f"{where}: namespace {ns!r} is not MetricNamespace ({namespace!r})")
        if metric not in table:
            errors.append(
                f"{where}: {metric} is not a metric the extension publishes (src/metrics.rs)"
            )
        if dims.get("FunctionName") not in functions:
            fn = dims.get("FunctionName")
            errors.append(f"{where}: FunctionName {fn!r} is not in ProfiledFunctionNames")
        for (value, sink), published in sets.items():
            if frozenset(dims) not in published:
                key = (braces([dims]), value, braces(published))
                unpublished.setdefault(key, {}).setdefault(f"{where}: {metric}", []).append(sink)
    warnings: list[str] = []
    for (read, value, published), where in unpublished.items():
        sinks = sorted({s for ss in where.values() for s in ss})
        sample = "; ".join(list(where)[:3]) + (
            f"; and {len(where) - 3} more" if len(where) > 3 else ""
        )
        message = (
            f"{len(where)} metric reads in {read}, but with LMP_DIMENSIONS={value} the extension "
            f"publishes only {published} (LMP_SINK={', '.join(sinks)}): {sample}"
        )
        if value in args.tolerate_unpublished:
            warnings.append(f"{message} (tolerated: --tolerate-unpublished {value})")
        else:
            errors.append(message)
    for value in args.tolerate_unpublished:
        if value not in dim_values:
            errors.append(f"--tolerate-unpublished {value}: not an LMP_DIMENSIONS value")
        elif not any(v == value for _, v, _ in unpublished):
            warnings.append(
                f"--tolerate-unpublished {value} is no longer needed (every read is published "
                "under it): remove it from the Makefile"
            )
    for fn in functions:
        if not any(r["function"] == fn for r in alarms.values()):
            errors.append(f"no alarm for profiled function {fn}")

    for w in warnings:
        print(f"check-alarms.py: WARNING: {w}", file=sys.stderr)
    for e in dict.fromkeys(errors):
        print(f"check-alarms.py: {e}", file=sys.stderr)
    if errors:
        return 1
    seen = "; ".join(f"{value} via {sink}: {braces(p)}" for (value, sink), p in sets.items())
    widget_reads = len(reads) - sum(len(r["queries"]) for r in alarms.values())
    tolerated = f", {len(warnings)} warnings above" if warnings else ""
    print(
        f"check-alarms.py: ok{tolerated}: {len(alarms)} alarms and {widget_reads} dashboard "
        f"metrics for {len(functions)} functions read published metrics and dimension sets "
        f"({seen})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
