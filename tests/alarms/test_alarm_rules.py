"""The template's alarms, evaluated on what the extension published for each example.

The series (tests/alarms/series/, recorded by record_series.py) are the extension's own EMF
output for each example's leaky and fixed twin, run end to end under the Lambda emulator with
the built layer, three execution environments each. They are replayed on a clock — as the
example is scheduled in the template (one environment, one invocation a minute) and as a small
fleet (three environments started together, an invocation every 10 s each) — and every alarm of
template.yaml is evaluated on them as CloudWatch evaluates it: its statistic over each period,
its threshold and comparison, M of N periods (DatapointsToAlarm of EvaluationPeriods), its
TreatMissingData, and for metric-math alarms the expression over its queries. The rules are read
from template.yaml as CloudFormation expands it (scripts/check-alarms.py --dump-rules, in the
tools venv), for two profiled functions.

Leaky twins page (leak), fixed twins never alarm at all, and only a real out-of-memory condition
pages or warns about memory.

    .venv/bin/python -m pytest -q tests/alarms [-s for the time each alarm took to fire]
"""

from __future__ import annotations

import bisect
import json
import math
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERIES = Path(__file__).resolve().parent / "series"
TOOLS_PYTHON = ROOT / ".venv-tools" / "bin" / "python"
FUNCTIONS = ["lambda-memory-profiler-example", "orders"]

# How the recorded invocations are spread over time.
SCENARIOS = {
    # template.yaml's ExampleSchedule: one environment invoked once a minute.
    "scheduled": {"environments": 1, "interval_s": 60},
    # Three environments started together (a burst of traffic), each invoked every 10 s.
    "fleet": {"environments": 3, "interval_s": 10},
}
# Alarm kinds (the alarm name without the function) that must fire (True) or must not (False).
PAGES = {"leak", "out-of-memory-soon", "out-of-memory"}
LEAKY = {"leak": True, "heap-growth": True, "near-oom": False, "out-of-memory": False}
EXPECTED = {
    "log_aggregator-leaky": LEAKY,
    "param_store-leaky": LEAKY,
    "pod_watcher-leaky": LEAKY,
    # Leaks until the environment is killed for memory (~560 invocations at 128 MB), three times.
    "log_aggregator-leaky-128mb": {
        "leak": True,
        "heap-growth": True,
        "out-of-memory-soon": True,
        "near-oom": True,
        "gc-uncollectable": False,
    },
}
FIXED = ["log_aggregator-fixed", "param_store-fixed", "pod_watcher-fixed"]
# Where expectations depend on the scenario: one kill in one environment (counted twice: the
# invocation whose memory mark reached the size, then the one killed) is a warning, not a page;
# three environments killed within minutes of each other page.
BY_SCENARIO = {
    ("log_aggregator-leaky-128mb", "scheduled"): {"out-of-memory": False},
    ("log_aggregator-leaky-128mb", "fleet"): {"out-of-memory": True},
}


# ---- the rules --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rules() -> dict:
    if not TOOLS_PYTHON.is_file():
        pytest.fail(f"{TOOLS_PYTHON} missing: run `make tools` (SAM CLI expands the template)")
    done = subprocess.run(
        [
            str(TOOLS_PYTHON),
            str(ROOT / "scripts" / "check-alarms.py"),
            "--dump-rules",
            "--parameter-overrides",
            f"ProfiledFunctionNames={','.join(FUNCTIONS)}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def alarms_of(rules: dict, function: str) -> dict[str, dict]:
    return {a["kind"]: a for a in rules["alarms"] if a["function"] == function}


# ---- the series -------------------------------------------------------------------------------


def load_case(name: str) -> list[dict[str, list]]:
    """One dict per recorded environment: metric -> value (or None) per invocation."""
    doc = json.loads((SERIES / f"{name}.json").read_text())
    return [
        {m: [v for v, n in runs for _ in range(n)] for m, runs in env["series"].items()}
        for env in doc["environments"]
    ]


def timeline(envs: list[dict[str, list]], scenario: dict) -> dict[str, list[tuple[float, float]]]:
    """metric -> [(seconds, value)]: environment k's invocation i at i × interval + k × interval
    / environments (the environments interleave)."""
    n, interval = scenario["environments"], scenario["interval_s"]
    points: dict[str, list[tuple[float, float]]] = {}
    for k in range(n):
        env = envs[k % len(envs)]
        for metric, values in env.items():
            for i, v in enumerate(values):
                if v is not None:
                    points.setdefault(metric, []).append((i * interval + k * interval / n, v))
    return {metric: sorted(pts) for metric, pts in points.items()}


# ---- CloudWatch's evaluation ------------------------------------------------------------------


def statistic(stat: str, values: list[float]) -> float:
    if stat == "SampleCount":
        return float(len(values))
    if stat == "Sum":
        return sum(values)
    if stat == "Average":
        return sum(values) / len(values)
    if stat == "Minimum":
        return min(values)
    if stat == "Maximum":
        return max(values)
    m = re.fullmatch(r"p(\d+(?:\.\d+)?)", stat)
    if m:  # nearest rank
        ordered = sorted(values)
        return ordered[max(0, math.ceil(float(m.group(1)) / 100 * len(ordered)) - 1)]
    raise AssertionError(f"statistic {stat} not modelled")


def period_values(query: dict, points: dict, start: float) -> float | None:
    """The query's statistic over the period [start, start + period); points sorted by time."""
    pts = points.get(query["metric"], [])
    lo = bisect.bisect_left(pts, (start, -math.inf))
    hi = bisect.bisect_left(pts, (start + query["period"], -math.inf))
    vals = [v for _, v in pts[lo:hi]]
    return statistic(query["stat"], vals) if vals else None


TOKEN = re.compile(r"\s*(\d+\.?\d*(?:[eE][-+]?\d+)?|[A-Za-z_]\w*|>=|<=|==|!=|&&|\|\||[-+*/(),<>!])")


def evaluate_expression(text: str, env: dict[str, float]) -> float | None:
    """CloudWatch metric math, the part alarms here use: numbers, ids, + - * /, comparisons,
    AND/OR/NOT, IF(condition, then, else). None when an input has no datapoint."""
    tokens = TOKEN.findall(text)
    assert "".join(tokens) == re.sub(r"\s+", "", text), f"cannot tokenize {text!r}"
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal pos
        tok = tokens[pos]
        assert expected is None or tok.upper() == expected, (tok, expected, text)
        pos += 1
        return tok

    def disjunction():
        left = conjunction()
        while (peek() or "").upper() in ("OR", "||"):
            take()
            right = conjunction()
            left = None if left is None or right is None else float(bool(left) or bool(right))
        return left

    def conjunction():
        left = comparison()
        while (peek() or "").upper() in ("AND", "&&"):
            take()
            right = comparison()
            left = None if left is None or right is None else float(bool(left) and bool(right))
        return left

    def comparison():
        left = additive()
        ops = {
            ">=": float.__ge__,
            "<=": float.__le__,
            ">": float.__gt__,
            "<": float.__lt__,
            "==": float.__eq__,
            "!=": float.__ne__,
        }
        while peek() in ops:
            op = ops[take()]
            right = additive()
            left = None if left is None or right is None else float(op(float(left), float(right)))
        return left

    def additive():
        left = term()
        while peek() in ("+", "-"):
            op = take()
            right = term()
            left = (
                None
                if left is None or right is None
                else (left + right if op == "+" else left - right)
            )
        return left

    def term():
        left = unary()
        while peek() in ("*", "/"):
            op = take()
            right = unary()
            if left is None or right is None:
                left = None
            elif op == "*":
                left = left * right
            else:
                left = None if right == 0 else left / right
        return left

    def unary():
        if peek() == "-":
            take()
            v = unary()
            return None if v is None else -v
        if (peek() or "").upper() in ("NOT", "!"):
            take()
            v = unary()
            return None if v is None else float(not v)
        return primary()

    def primary():
        tok = take()
        if tok == "(":
            v = disjunction()
            take(")")
            return v
        if tok.upper() == "IF":
            take("(")
            cond = disjunction()
            take(",")
            yes = disjunction()
            take(",")
            no = disjunction()
            take(")")
            return None if cond is None else (yes if cond else no)
        if re.fullmatch(r"\d.*", tok):
            return float(tok)
        assert tok in env, f"{text!r}: unknown id {tok}"
        return env[tok]

    value = disjunction()
    assert pos == len(tokens), f"{text!r}: trailing {tokens[pos:]}"
    return value


def datapoint(rule: dict, points: dict, start: float) -> float | None:
    """The value the alarm compares for the period starting at `start`."""
    if rule["expression"] is None:
        (query,) = rule["queries"]
        return period_values(query, points, start)
    env = {q["id"]: period_values(q, points, start) for q in rule["queries"]}
    return evaluate_expression(rule["expression"]["expression"], env)


def breaches(rule: dict, value: float) -> bool:
    t = rule["threshold"]
    return {
        "GreaterThanOrEqualToThreshold": value >= t,
        "GreaterThanThreshold": value > t,
        "LessThanThreshold": value < t,
        "LessThanOrEqualToThreshold": value <= t,
    }[rule["comparison"]]


def evaluate(rule: dict, points: dict, end_s: float) -> list[tuple[float, str]]:
    """The alarm's state at the end of every period, from the first one until the evaluation
    range has moved past the last datapoint: ALARM when at least DatapointsToAlarm of the last
    EvaluationPeriods periods breach, missing periods counted as TreatMissingData says."""
    period = max(q["period"] for q in rule["queries"])
    n, m, treat = (
        rule["evaluation_periods"],
        rule["datapoints_to_alarm"],
        rule["treat_missing_data"],
    )
    dps = {}
    states, state = [], "INSUFFICIENT_DATA"
    last = int(end_s // period) + n + 1
    for k in range(1, last + 1):
        dps[k - 1] = datapoint(rule, points, (k - 1) * period)
        window = [dps.get(j) for j in range(k - n, k)]
        present = [v for v in window if v is not None]
        missing = len(window) - len(present)
        breaching = sum(breaches(rule, v) for v in present) + (
            missing if treat == "breaching" else 0
        )
        if breaching >= m:
            state = "ALARM"
        elif treat in ("notBreaching", "breaching") or present:
            state = "OK"
        elif treat == "missing":
            state = "INSUFFICIENT_DATA"
        states.append((k * period, state))
    return states


def first_alarm(rule: dict, points: dict, end_s: float) -> float | None:
    return next((t for t, s in evaluate(rule, points, end_s) if s == "ALARM"), None)


def run_case(rules: dict, case: str, scenario: str) -> dict[str, float | None]:
    """Alarm kind -> seconds until it first went to ALARM (None: never)."""
    envs = load_case(case)
    points = timeline(envs, SCENARIOS[scenario])
    end = max(t for pts in points.values() for t, _ in pts)
    return {
        kind: first_alarm(rule, points, end)
        for kind, rule in alarms_of(rules, FUNCTIONS[0]).items()
    }


def minutes(t: float | None) -> str:
    return "never" if t is None else f"{t / 60:.0f} min"


# ---- the tests --------------------------------------------------------------------------------


def test_every_profiled_function_gets_the_same_rules(rules):
    assert rules["functions"] == FUNCTIONS
    first, second = (alarms_of(rules, fn) for fn in FUNCTIONS)
    assert set(first) == set(second) and len(first) == 6, (set(first), set(second))

    def anonymous(rule, fn):
        return json.loads(json.dumps({**rule, "logical_id": None}).replace(fn, "FN"))

    for kind in first:
        assert anonymous(first[kind], FUNCTIONS[0]) == anonymous(second[kind], FUNCTIONS[1]), kind


def test_pages_are_the_analysis_figures_and_the_rest_warn(rules):
    alarms = alarms_of(rules, FUNCTIONS[0])
    severity = {kind: a["severity"] for kind, a in alarms.items()}
    assert {k for k, s in severity.items() if s == "page"} == PAGES, severity
    assert all(s == "warning" for k, s in severity.items() if k not in PAGES), severity
    assert alarms["near-oom"]["queries"][0]["metric"] == "MemoryUtilization"


def test_every_metric_an_alarm_reads_is_recorded(rules):
    recorded = set(load_case(FIXED[0])[0])
    for a in rules["alarms"]:
        for q in a["queries"]:
            assert q["metric"] in recorded, f"{a['name']} reads {q['metric']}: re-record the series"


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("case", FIXED)
def test_fixed_twins_never_alarm(rules, case, scenario):
    fired = run_case(rules, case, scenario)
    print(f"{case} ({scenario}): " + ", ".join(f"{k} {minutes(t)}" for k, t in fired.items()))
    assert all(t is None for t in fired.values()), fired


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("case", list(EXPECTED))
def test_leaky_twins_page(rules, case, scenario):
    fired = run_case(rules, case, scenario)
    print(f"{case} ({scenario}): " + ", ".join(f"{k} {minutes(t)}" for k, t in fired.items()))
    expected = {**EXPECTED[case], **BY_SCENARIO.get((case, scenario), {})}
    for kind, must in expected.items():
        assert (fired[kind] is not None) == must, (kind, "must" if must else "must not", fired)
    assert any(fired[k] is not None for k in PAGES), fired


# The rules themselves on hand-made series: what no example produces.


def series(metric: str, values: list[float], interval_s: float = 60) -> dict:
    return {metric: [(i * interval_s, v) for i, v in enumerate(values)]}


def test_uncollectable_objects_warn(rules):
    rule = alarms_of(rules, FUNCTIONS[0])["gc-uncollectable"]
    assert first_alarm(rule, series("GcUncollectable", [0.0] * 30), 1800) is None
    assert (
        first_alarm(rule, series("GcUncollectable", [0.0] * 10 + [1.0] + [0.0] * 19), 1800)
        is not None
    )


def test_out_of_memory_pages_when_repeated_and_a_share_of_traffic(rules):
    rule = alarms_of(rules, FUNCTIONS[0])["out-of-memory"]
    one_kill = [0.0] * 50 + [1.0, 1.0] + [0.0] * 50  # counted twice, a minute apart
    assert first_alarm(rule, series("OutOfMemory", one_kill), 6000) is None
    repeated = [0.0] * 50 + [1.0, 0.0, 1.0, 0.0, 1.0] + [0.0] * 50
    assert first_alarm(rule, series("OutOfMemory", repeated), 6000) is not None
    # The same three among 150,000 invocations of 15 minutes: 0.002 % of the traffic.
    busy = [0.0] * 150_000
    busy[70_000:70_003] = [1.0, 1.0, 1.0]
    assert first_alarm(rule, series("OutOfMemory", busy, interval_s=0.006), 900) is None


def test_near_oom_is_a_high_water_mark_warning(rules):
    rule = alarms_of(rules, FUNCTIONS[0])["near-oom"]
    assert rule["severity"] == "warning"
    climbing = [50.0 + i for i in range(60)]  # reaches 90 % at minute 40 and stays
    assert first_alarm(rule, series("MemoryUtilization", climbing), 3600) == pytest.approx(41 * 60)


def test_metric_math_reader():
    env = {"oom": 3.0, "invocations": 100.0}
    assert evaluate_expression("IF(oom >= 3 AND oom / invocations >= 0.01, 1, 0)", env) == 1
    assert evaluate_expression("IF(oom >= 4 AND oom / invocations >= 0.01, 1, 0)", env) == 0
    assert evaluate_expression("IF(oom >= 3 && oom / invocations >= 0.5, 1, 0)", env) == 0
    assert evaluate_expression("IF(oom >= 3, 1, 0)", {"oom": None}) is None
