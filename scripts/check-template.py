"""check-template.py [TEMPLATE] [README]: checks cfn-lint cannot make on template.yaml.

- the dashboard body is valid JSON once CloudFormation has substituted its ${...} references;
- every metric the alarms and the dashboard read is in the README's metric table (the names the
  layer publishes), in the template's namespace parameter, with the FunctionName dimension;
- every alarm notifies the optional SNS topic.

Runs with the tools venv (`.venv-tools`), which has cfn-lint's CloudFormation YAML loader.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from cfnlint.decode.cfn_yaml import load

ROOT = Path(__file__).resolve().parents[1]


def readme_metrics(readme: Path) -> set[str]:
    names = re.findall(r"^\| `([A-Za-z]+)` \|", readme.read_text(), flags=re.MULTILINE)
    return set(names)


def dashboard_metrics(body: str) -> tuple[list[str], list[str]]:
    """Metric names the dashboard reads, and errors. ${X} references become `@X@` inside strings
    and 0 where a bare number is expected (threshold lines)."""
    text = re.sub(r"(:\s*)\$\{[^}]+\}(?=\s*[,}\]])", r"\g<1>0", body)
    doc = json.loads(re.sub(r"\$\{([^}]+)\}", r"@\1@", text))
    found, errors = [], []
    for widget in doc["widgets"]:
        for metric in widget.get("properties", {}).get("metrics", []):
            fields = [f for f in metric if not isinstance(f, dict)]
            found.append(fields[1])
            if fields[0] != "@Ns@" or fields[2:] != ["FunctionName", "@Fn@"]:
                errors.append(f"dashboard metric {fields}: expected [Ns, name, FunctionName, Fn]")
    return found, errors


def main() -> int:
    template_path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "template.yaml"
    readme = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "README.md"
    template = load(str(template_path))
    known = readme_metrics(readme)
    if not known:
        print(f"check-template.py: no metric table found in {readme}", file=sys.stderr)
        return 1
    errors: list[str] = []
    alarms = 0
    for name, res in template["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::CloudWatch::Alarm":
            alarms += 1
            if props["MetricName"] not in known:
                errors.append(f"{name}: metric {props['MetricName']} is not in the README table")
            if props.get("Namespace") != {"Ref": "MetricNamespace"}:
                errors.append(f"{name}: namespace is not the MetricNamespace parameter")
            if [d["Name"] for d in props.get("Dimensions", [])] != ["FunctionName"]:
                errors.append(f"{name}: dimensions must be exactly FunctionName")
            for key in ("AlarmActions", "OKActions"):
                if "Fn::If" not in props.get(key, {}):
                    errors.append(f"{name}: {key} does not use the optional topic")
        elif res["Type"] == "AWS::CloudWatch::Dashboard":
            body = props["DashboardBody"]["Fn::Sub"][0]
            try:
                found, dash_errors = dashboard_metrics(body)
            except (json.JSONDecodeError, KeyError, IndexError) as e:
                errors.append(f"{name}: dashboard body is not valid: {e}")
                continue
            errors += [f"{name}: {e}" for e in dash_errors]
            errors += [f"{name}: {m} is not in the README table" for m in found if m not in known]
    if alarms == 0:
        errors.append("no alarm in the template")
    for e in errors:
        print(f"check-template.py: {e}", file=sys.stderr)
    if not errors:
        print(f"check-template.py: ok: {alarms} alarms and the dashboard use known metric names")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
