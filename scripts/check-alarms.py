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
import gzip
import http.server
import itertools
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

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


# ---- what the extension publishes ---------------------------------------------------------------


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


def cbor_decode(data: bytes) -> Any:
    """Just enough CBOR (RFC 8949) for a PutMetricData request: every major type, definite and
    indefinite lengths, floats, tags (the timestamp's tag 1) read through."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        chunk = data[pos : pos + n]
        pos += n
        return chunk

    def argument(info: int) -> int | None:
        if info < 24:
            return info
        if info == 31:
            return None
        return int.from_bytes(take({24: 1, 25: 2, 26: 4, 27: 8}[info]), "big")

    def item() -> Any:
        nonlocal pos
        head = take(1)[0]
        major, info = head >> 5, head & 31
        if major == 7:
            if info == 25:
                return struct.unpack(">e", take(2))[0]
            if info == 26:
                return struct.unpack(">f", take(4))[0]
            if info == 27:
                return struct.unpack(">d", take(8))[0]
            return {20: False, 21: True, 22: None, 23: None}.get(info)
        n = argument(info)
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 6:
            return item()
        if n is None:  # indefinite length, up to the break byte
            parts = []
            while data[pos] != 0xFF:
                parts.append(item() if major != 5 else (item(), item()))
            pos += 1
            if major == 2:
                return b"".join(parts)
            if major == 3:
                return "".join(parts)
            return parts if major == 4 else dict(parts)
        if major == 2:
            return take(n)
        if major == 3:
            return take(n).decode()
        if major == 4:
            return [item() for _ in range(n)]
        return {item(): item() for _ in range(n)}

    return item()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandIn(http.server.ThreadingHTTPServer):
    """The Extensions and Telemetry APIs (one INVOKE, its platform.report, then SHUTDOWN) and a
    CloudWatch endpoint that records the dimension sets of every PutMetricData datum."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), StandInHandler)
        self.next_calls = 0
        self.request_id = str(uuid.uuid4())
        self.telemetry_uri: str | None = None
        self.sets: dict[str, set[tuple[str, ...]]] = {}
        self.namespaces: set[str] = set()
        self.errors: list[str] = []


class StandInHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StandIn

    def log_message(self, *args: Any) -> None:
        pass

    def reply(self, body: bytes, headers: dict[str, str], status: int = 200) -> None:
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, doc: Any, headers: dict[str, str] | None = None) -> None:
        self.reply(
            json.dumps(doc).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    def body(self) -> bytes:
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        return data

    def do_POST(self) -> None:
        data = self.body()
        if self.path.endswith("/extension/register"):
            self.reply_json(
                {"functionName": "probe", "functionVersion": "7", "handler": "app.handler"},
                {"Lambda-Extension-Identifier": str(uuid.uuid4())},
            )
        elif self.path.endswith("/operation/PutMetricData"):
            try:
                request = cbor_decode(data)
                self.server.namespaces.add(request.get("Namespace"))
                for datum in request.get("MetricData", []):
                    names = tuple(d["Name"] for d in datum.get("Dimensions", []))
                    self.server.sets.setdefault(datum["MetricName"], set()).add(names)
            except Exception as e:  # noqa: BLE001 - reported as a check failure
                self.server.errors.append(f"undecodable PutMetricData: {e!r}")
            self.reply(
                b"\xa0", {"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"}
            )
        else:
            self.reply_json({})

    def do_PUT(self) -> None:  # the Telemetry API subscription
        self.server.telemetry_uri = json.loads(self.body())["destination"]["URI"]
        self.reply_json({})

    def do_GET(self) -> None:  # /extension/event/next
        self.server.next_calls += 1
        now_ms = int(time.time() * 1000)
        if self.server.next_calls == 1:
            self.reply_json(
                {
                    "eventType": "INVOKE",
                    "requestId": self.server.request_id,
                    "deadlineMs": now_ms + 3000,
                    "invokedFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:probe",
                    "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-00000000-0"},
                }
            )
            return
        self.send_report()
        self.reply_json(
            {"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": now_ms + 2000}
        )

    def send_report(self) -> None:
        if not self.server.telemetry_uri:
            self.server.errors.append("the extension did not subscribe to the Telemetry API")
            return
        uri = urllib.parse.urlsplit(self.server.telemetry_uri)
        record = {
            "requestId": self.server.request_id,
            "status": "success",
            "metrics": {
                "durationMs": 2.0,
                "billedDurationMs": 2,
                "memorySizeMB": 128,
                "maxMemoryUsedMB": 40,
                "initDurationMs": 5.0,
            },
        }
        batch = [
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "type": "platform.report",
                "record": record,
            }
        ]
        req = urllib.request.Request(
            f"http://127.0.0.1:{uri.port}{uri.path}",
            data=json.dumps(batch).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            urllib.request.urlopen(req, timeout=5).read()
        except OSError as e:
            self.server.errors.append(f"telemetry listener refused the report: {e}")


def probe(extension: Path, dimensions: str, sink: str) -> dict[str, set[tuple[str, ...]]]:
    """Metric name -> dimension sets (name tuples) the extension publishes with this
    LMP_DIMENSIONS value through this sink."""
    server = StandIn()
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": address,
        "AWS_LAMBDA_FUNCTION_NAME": "probe",
        "AWS_LAMBDA_FUNCTION_VERSION": "7",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "probe",
        "AWS_SECRET_ACCESS_KEY": "probe",
        "AWS_ENDPOINT_URL": f"http://{address}",
        "AWS_EC2_METADATA_DISABLED": "true",
        "LMP_SINK": sink,
        "LMP_FLUSH": "end",
        "LMP_NAMESPACE": "CheckAlarms",
        "LMP_DIMENSIONS": dimensions,
        "LMP_INTAKE_PORT": str(free_udp_port()),
    }
    try:
        done = subprocess.run([str(extension)], env=env, capture_output=True, text=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    if done.returncode != 0 or server.errors:
        raise SystemExit(
            f"check-alarms.py: probe of {extension} (LMP_DIMENSIONS={dimensions}, LMP_SINK={sink}) "
            f"failed: exit {done.returncode}, {server.errors}\n{done.stderr[-2000:]}"
        )
    sets = server.sets
    if sink == "emf":
        for line in done.stdout.splitlines():
            if not line.startswith("{") or '"_aws"' not in line:
                continue
            for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    for names in directive["Dimensions"]:
                        sets.setdefault(metric["Name"], set()).add(tuple(names))
    if not sets:
        raise SystemExit(
            f"check-alarms.py: the extension published nothing (LMP_DIMENSIONS={dimensions}, "
            f"LMP_SINK={sink})\n{done.stderr[-2000:]}"
        )
    return sets


def published_sets(
    extension: Path, values: list[str]
) -> dict[tuple[str, str], set[frozenset[str]]]:
    """(LMP_DIMENSIONS value, sink) -> the dimension sets every metric is published in."""
    out = {}
    for value, sink in itertools.product(values, ("emf", "cloudwatch")):
        per_metric = probe(extension, value, sink)
        common = set.intersection(*({frozenset(s) for s in sets} for sets in per_metric.values()))
        out[(value, sink)] = common
    return out


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
