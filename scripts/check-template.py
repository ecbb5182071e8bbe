"""check-template.py: checks cfn-lint cannot make on template.yaml, on the template as
CloudFormation expands it (AWS::LanguageExtensions: one set of resources per profiled function).

- every function of ProfiledFunctionNames gets the same dashboard, alarms and saved queries, and
  each of them reads that function only;
- every dashboard body is valid JSON once CloudFormation has substituted it;
- every metric the alarms and the dashboards read is in the README's metric table;
- paging alarms ("Page:" in their description) notify AlarmTopicArn and nothing else, warnings
  ("Warning:") WarningTopicArn and nothing else, on ALARM and on OK; with both topics empty no
  alarm notifies anything;
- with DeployExample=false the example function, its log group and its output are gone; with
  CreateDashboards=false the dashboards and their URL outputs;
- the layer ARN and the publishing policy are exported.

`--write-defaults OUT` also writes the template with the `--parameter-overrides` values as the
parameters' defaults (text otherwise unchanged): cfn-lint and `sam validate` expand Fn::ForEach
with the defaults, so that copy is how they check the template with several functions.

Runs with the tools venv (`.venv-tools`); check-alarms.py (same folder) checks the metrics and
dimension sets against what the extension publishes. Usage:

  check-template.py [--template T] [--readme R] [--parameter-overrides K=V ...]
                    [--write-defaults OUT]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_check_alarms():
    """check-alarms.py as a module (its file name has a dash): the expansion and rule readers."""
    spec = importlib.util.spec_from_file_location(
        "check_alarms", Path(__file__).with_name("check-alarms.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ca = load_check_alarms()


def write_defaults(template: Path, overrides: dict[str, str], out: Path) -> None:
    """The template with each overridden parameter's `Default:` line replaced."""
    text = template.read_text()
    for name, value in overrides.items():
        pattern = re.compile(
            rf"(^  {re.escape(name)}:\n(?:    .*\n)*?    Default: ).*$", re.MULTILINE
        )
        text, n = pattern.subn(lambda m, v=value: m.group(1) + json.dumps(v), text, count=1)
        if n != 1:
            raise SystemExit(
                f"check-template.py: no Default line for parameter {name} in {template}"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def per_function_sets(expanded: dict, functions: list[str]) -> list[str]:
    """Each function has the same kinds of alarms, one dashboard and the four queries, all about
    itself."""
    errors = []
    kinds: dict[str, Counter] = {fn: Counter() for fn in functions}
    for lid, res in expanded["Resources"].items():
        props = res.get("Properties", {})
        kind = res["Type"]
        if kind == "AWS::CloudWatch::Alarm":
            rule = ca.alarm_rule(lid, props)
            fn = rule["function"]
            if fn not in kinds:
                errors.append(f"{lid}: alarm on {fn!r}, not a profiled function")
                continue
            if not props["AlarmName"].startswith(f"{fn}-"):
                errors.append(f"{lid}: alarm name {props['AlarmName']} does not start with {fn}-")
            kinds[fn][f"alarm {rule['kind']}"] += 1
        elif kind == "AWS::CloudWatch::Dashboard":
            fn = props["DashboardName"].removesuffix("-memory")
            if fn not in kinds:
                errors.append(
                    f"{lid}: dashboard {props['DashboardName']} is not a profiled function's"
                )
                continue
            body = props["DashboardBody"]
            if f"/aws/lambda/{fn}'" not in body:
                errors.append(f"{lid}: the log widget does not read /aws/lambda/{fn}")
            kinds[fn]["dashboard"] += 1
        elif kind == "AWS::Logs::QueryDefinition":
            parts = props["Name"].split("/")
            fn = parts[1] if len(parts) == 3 else None
            if fn not in kinds or props["LogGroupNames"] != [f"/aws/lambda/{fn}"]:
                errors.append(f"{lid}: query {props['Name']} on {props['LogGroupNames']}")
                continue
            kinds[fn][f"query {parts[2]}"] += 1
    reference = kinds[functions[0]]
    if not reference:
        errors.append(f"no resources for {functions[0]}")
    for fn, found in kinds.items():
        if found != reference:
            errors.append(f"{fn} has {dict(found)}, {functions[0]} has {dict(reference)}")
        for what, n in found.items():
            if n != 1:
                errors.append(f"{fn}: {n} × {what}")
    return errors


def severities(expanded: dict) -> list[str]:
    """Pages notify the paging topic, warnings the warning topic, on ALARM and OK alike."""
    errors = []
    expected = {"Page:": "page", "Warning:": "warning"}
    for lid, res in ca.resources(expanded, "AWS::CloudWatch::Alarm").items():
        props = res["Properties"]
        prefix = props.get("AlarmDescription", "").split(" ", 1)[0]
        want = expected.get(prefix)
        if want is None:
            errors.append(
                f"{lid}: description must start with 'Page:' or 'Warning:' (its severity)"
            )
            continue
        for key in ("AlarmActions", "OKActions"):
            topic = {"page": ca.PAGE_TOPIC, "warning": ca.WARNING_TOPIC}[want]
            if props.get(key) != [topic]:
                errors.append(f"{lid}: a {want} whose {key} are {props.get(key)}, not [{topic}]")
        if props.get("InsufficientDataActions"):
            errors.append(f"{lid}: notifies on INSUFFICIENT_DATA (no traffic is not an incident)")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--template", type=Path, default=ROOT / "template.yaml")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--write-defaults", type=Path, metavar="OUT")
    args = ap.parse_args()
    overrides = ca.parse_overrides(args.parameter_overrides)
    if args.write_defaults:
        write_defaults(args.template, overrides, args.write_defaults)

    known = ca.readme_table(args.readme)
    if not known:
        print(f"check-template.py: no metric table found in {args.readme}", file=sys.stderr)
        return 1
    errors: list[str] = []

    expanded, values = ca.expand(args.template, {**ca.SEVERITY_PARAMETERS, **overrides})
    functions = values["ProfiledFunctionNames"]
    errors += per_function_sets(expanded, functions)
    errors += severities(expanded)
    alarms = ca.resources(expanded, "AWS::CloudWatch::Alarm")
    for lid, res in alarms.items():
        for q in ca.alarm_rule(lid, res["Properties"])["queries"]:
            if q["metric"] not in known:
                errors.append(f"{lid}: metric {q['metric']} is not in the README table")
    dashboards = ca.resources(expanded, "AWS::CloudWatch::Dashboard")
    for lid, res in dashboards.items():
        try:
            found = ca.dashboard_metrics(res["Properties"]["DashboardBody"])
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
            errors.append(f"{lid}: dashboard body is not valid JSON: {e}")
            continue
        errors += [
            f"{lid}: {m['metric']} is not in the README table"
            for m in found
            if m.get("metric") not in known
        ]

    # No topic given: no alarm notifies anything (the actions are conditional).
    quiet, _ = ca.expand(args.template, {**overrides, "AlarmTopicArn": "", "WarningTopicArn": ""})
    for lid, res in ca.resources(quiet, "AWS::CloudWatch::Alarm").items():
        for key in ("AlarmActions", "OKActions"):
            if res["Properties"].get(key):
                errors.append(f"{lid}: {key} without a topic: {res['Properties'][key]}")
    # Without the example: the layer, the policy and the profiled functions' resources only.
    bare, _ = ca.expand(args.template, {**overrides, "DeployExample": "false"})
    for lid in ("ExampleFunction", "ExampleFunctionLogGroup"):
        res = bare["Resources"].get(lid)
        if res is not None and res.get("Condition") != "DeployExample":
            errors.append(f"{lid} is deployed with DeployExample=false")
    if bare["Outputs"].get("ExampleFunctionName", {}).get("Condition") != "DeployExample":
        errors.append("output ExampleFunctionName does not depend on DeployExample")
    # Without dashboards: alarms and queries stay, every dashboard and its URL output go.
    plain, _ = ca.expand(args.template, {**overrides, "CreateDashboards": "false"})
    for lid, res in ca.resources(plain, "AWS::CloudWatch::Dashboard").items():
        if res.get("Condition") != "CreateDashboards":
            errors.append(f"{lid} is deployed with CreateDashboards=false")
    for name, output in plain["Outputs"].items():
        if name.startswith("Dashboard") and output.get("Condition") != "CreateDashboards":
            errors.append(f"output {name} does not depend on CreateDashboards")
    for output in ("LayerArn", "PublishMetricsPolicyArn"):
        if "Export" not in expanded["Outputs"].get(output, {}):
            errors.append(f"output {output} is not exported")

    for e in errors:
        print(f"check-template.py: {e}", file=sys.stderr)
    if not errors:
        pages = sum(1 for r in alarms.values() if ca.severity(r["Properties"]) == "page")
        print(
            f"check-template.py: ok: {len(functions)} functions ({', '.join(functions)}): "
            f"{len(alarms)} alarms ({pages} pages), "
            f"{len(dashboards)} dashboards, known metric names, topics by severity"
        )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
