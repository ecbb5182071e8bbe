"""Allocation sites name the function's own line: library frames are skipped (the standard
library, packages installed into the task root), ``via`` names the allocating line, and the
return value is not a site. Real tracemalloc, real files, default options."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc

from conftest import ROOT, check_invocation
from lambda_memory_profiler import memory_profile

_BY_ID: dict = {}  # module level, as a handler's cache would be

BODY = json.dumps([{"id": i, "name": f"item-{i}", "tags": ["a", "b"]} for i in range(400)])


def _line_of(fn, offset: int) -> int:
    return fn.__wrapped__.__code__.co_firstlineno + offset


def _sites(trace: dict) -> dict:
    return {(s["file"], s["line"]): s for s in trace["top"]}


def test_leak_through_json_loads_names_the_handlers_line_via_json(intake, lmp_env):
    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        _BY_ID[event["id"]] = json.loads(event["body"])  # the leaking line
        return None

    try:
        for i in range(3):
            handler({"id": i, "body": BODY}, None)
            rec = intake.next()
            check_invocation(rec)
            top = rec["trace"]["top"][0]
            assert (top["file"], top["line"]) == (__file__, _line_of(handler, 2)), top
            # Every parsed object is held: ~1,600 blocks, allocated inside json.
            assert top["count"] >= 1600, top
            assert top["via"].startswith(json.decoder.__file__ + ":"), top
    finally:
        _BY_ID.clear()


def test_leak_through_a_helper_module_names_the_helpers_line(intake, lmp_env, tmp_path):
    # The function's own code in another module of its folder: the newest own frame is the
    # helper's line, which is where the function's code called into json.
    (tmp_path / "lmp_test_helper.py").write_text(
        textwrap.dedent(
            """\
            import json

            KEPT = []


            def remember(body):
                KEPT.append(json.loads(body))
            """
        )
    )
    lmp_env.syspath_prepend(str(tmp_path))
    helper = importlib.import_module("lmp_test_helper")

    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        helper.remember(event)
        return None

    try:
        handler(BODY, None)
        rec = intake.next()
        check_invocation(rec)
        top = rec["trace"]["top"][0]
        assert (top["file"], top["line"]) == (helper.__file__, 7), rec["trace"]["top"]
        assert top["via"].startswith(json.decoder.__file__ + ":"), top
    finally:
        helper.KEPT.clear()
        sys.modules.pop("lmp_test_helper", None)


def test_a_big_response_is_not_a_site(intake, lmp_env):
    kept = []

    @memory_profile(sample_rate=1.0, intake_port=intake.port)
    def handler(event, context):
        kept.append(bytearray(20_000))  # the leaking line
        rows = [{"id": i, "name": f"item-{i}"} for i in range(500)]  # response, built here
        parsed = json.loads(event)  # response, built inside json
        return {"statusCode": 200, "rows": rows, "parsed": parsed, "body": "x" * 30_000}

    for _ in range(3):
        out = handler(BODY, None)
        rec = intake.next()
        check_invocation(rec)
        t = rec["trace"]
        # Live at the end, so retained (over 150 kB with the parsed body) ...
        assert t["retained_bytes"] > 150_000, t
        # ... but the runtime frees it after the invocation: the leak is the top site and
        # the response's lines hold at most a few free-list dict tables.
        sites = _sites(t)
        top = t["top"][0]
        assert (top["file"], top["line"]) == (__file__, _line_of(handler, 2)), t["top"]
        for offset in (3, 4, 5):
            held = sites.get((__file__, _line_of(handler, offset)), {"size": 0})["size"]
            assert held < 80 * 250, (offset, t["top"])
        assert len(out["rows"]) == 500 and len(out["parsed"]) == 400
    kept.clear()


APP = """\
import foo
import helper
from lambda_memory_profiler import memory_profile

KEPT = []


@memory_profile(sample_rate=1.0)
def handler(event, context):
    KEPT.append(foo.build(event))
    KEPT.append(helper.load(event))
    return None
"""

HELPER = """\
import bar


def load(n):
    return bar.make(n)
"""

# A library call 10+ frames deep, as a botocore client call or a parser is.
FOO_CORE = """\
def build(n):
    return _descend(n, 10)


def _descend(n, depth):
    if depth:
        return _descend(n, depth - 1)
    return [str(i) * 8 for i in range(n)]
"""

BAR = """\
def make(n):
    return _descend(n, 10)


def _descend(n, depth):
    if depth:
        return _descend(n, depth - 1)
    return [bytes(100 + i % 7) for i in range(n)]
"""


def test_packages_installed_into_the_task_root_are_not_the_functions_code(intake, tmp_path):
    root = tmp_path / "task"
    (root / "foo").mkdir(parents=True)
    (root / "app.py").write_text(APP)
    (root / "helper.py").write_text(HELPER)
    (root / "foo" / "__init__.py").write_text("from .core import build\n")
    (root / "foo" / "core.py").write_text(FOO_CORE)
    (root / "bar.py").write_text(BAR)
    # As `pip install -t .` leaves them: foo with top_level.txt, bar with a RECORD only.
    (root / "foo-1.0.dist-info").mkdir()
    (root / "foo-1.0.dist-info" / "top_level.txt").write_text("foo\n")
    (root / "bar-2.0.dist-info").mkdir()
    (root / "bar-2.0.dist-info" / "RECORD").write_text(
        "bar.py,sha256=abc,160\n"
        "bar-2.0.dist-info/RECORD,,\n"
        "__pycache__/bar.cpython-311.pyc,,\n"
        "../../bin/bar-tool,sha256=def,50\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMP_")}
    env.update(
        LAMBDA_TASK_ROOT=str(root),
        LMP_INTAKE_PORT=str(intake.port),
        PYTHONPATH=os.pathsep.join([str(ROOT / "layer" / "python"), str(root)]),
    )
    code = "import app\nfor _ in range(2):\n    app.handler(300, None)\n"
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=root, timeout=60)
    for rec in (intake.next(), intake.next()):
        check_invocation(rec)
        sites = _sites(rec["trace"])
        app, helper = str(root / "app.py"), str(root / "helper.py")
        # foo is a package of the task root: the site is the function's calling line.
        assert (app, 10) in sites, rec["trace"]["top"]
        assert sites[(app, 10)]["via"] == f"{root / 'foo' / 'core.py'}:8", sites[(app, 10)]
        # bar.py is a module of the task root (from RECORD): the site is the helper's line.
        assert (helper, 5) in sites, rec["trace"]["top"]
        assert sites[(helper, 5)]["via"] == f"{root / 'bar.py'}:8", sites[(helper, 5)]
        assert not any(f.startswith((str(root / "foo"), str(root / "bar"))) for f, _ in sites)


def test_public_api_fallback_groups_like_the_fast_path():
    # The fast path reads the snapshot's private trace list; if that layout ever changes, the
    # public statistics("traceback") must give the same sites, via lines and sizes.
    from lambda_memory_profiler._sites import SiteTable

    kept = []
    tracemalloc.start(16)
    try:
        kept.append(json.loads(BODY))  # via json
        kept.append([bytearray(64) for _ in range(50)])  # allocated on this line
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    fast = SiteTable.from_snapshot(snapshot)
    public = SiteTable.from_statistics(snapshot.statistics("traceback"))
    assert fast.top(20) == public.top(20)
    assert (fast.retained_bytes, fast.retained_blocks) == (
        public.retained_bytes,
        public.retained_blocks,
    )
    sites = _sites({"top": fast.top(20)})
    first = sys._getframe().f_code.co_firstlineno
    assert sites[(__file__, first + 8)]["via"].startswith(json.decoder.__file__ + ":")
    assert sites[(__file__, first + 9)]["count"] >= 50 and "via" not in sites[(__file__, first + 9)]
