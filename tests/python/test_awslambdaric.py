"""The decorator under the real AWS runtime client (awslambdaric) and a local Runtime API."""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
from conftest import ROOT, MiB, check_invocation

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("awslambdaric") is None,
    reason="awslambdaric is not installed for this Python (it is in the project venv)",
)

APP = textwrap.dedent(
    """
    from lambda_memory_profiler import memory_profile

    KEPT = []

    @memory_profile(sample_rate=1.0)
    def handler(event, context):
        KEPT.append(b"k" * (event["mib"] << 20))
        return {"statusCode": 200, "n": len(KEPT), "rid": context.aws_request_id}
    """
)


class RuntimeApi:
    """Serves a fixed list of events on /next, then holds the next request until closed."""

    def __init__(self, events: list) -> None:
        self.events = list(events)
        self.responses: dict = {}
        self.done = threading.Event()
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if not self.path.endswith("/runtime/invocation/next"):
                    self.send_error(404)
                    return
                if not api.events:
                    api.done.wait(30)  # no more work: keep the runtime waiting
                    with contextlib.suppress(OSError):  # the runtime is gone by now
                        self.send_error(503)
                    return
                rid, event = api.events.pop(0)
                body = json.dumps(event).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Lambda-Runtime-Aws-Request-Id", rid)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 60000))
                self.send_header(
                    "Lambda-Runtime-Invoked-Function-Arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:orders-api",
                )
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-" + "0" * 24)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n)
                parts = self.path.split("/")
                if "invocation" in parts:
                    api.responses[parts[-2]] = (parts[-1], data)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.done.set()
        self.server.shutdown()
        self.server.server_close()


def test_decorated_handler_under_awslambdaric(intake, tmp_path):
    (tmp_path / "app.py").write_text(APP)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    api = RuntimeApi([(rid, {"mib": 4}) for rid in ids])
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("LMP_") or k == "AWS_LAMBDA_MAX_CONCURRENCY":
            env.pop(k)
    env.update(
        AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{api.port}",
        AWS_LAMBDA_FUNCTION_NAME="orders-api",
        LMP_INTAKE_PORT=str(intake.port),
        PYTHONPATH=os.pathsep.join([str(ROOT / "layer" / "python"), str(tmp_path)]),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "awslambdaric", "app.handler"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        recs = [intake.next() for _ in ids]
        # The record leaves before the runtime posts the response: wait for the last one.
        deadline = time.monotonic() + 20
        while len(api.responses) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        proc.kill()
        out = proc.communicate(timeout=30)[0].decode(errors="replace")
        api.close()
    assert [r["request_id"] for r in recs] == ids, out
    assert [r["cold_start"] for r in recs] == [True, False, False]
    assert all(r["pid"] == proc.pid for r in recs)
    app = str(tmp_path / "app.py")
    for i, r in enumerate(recs):
        check_invocation(r)
        t = r["trace"]
        assert abs(t["retained_bytes"] - 4 * MiB) <= 0.05 * 4 * MiB, (i, t)
        # The handler's line, below the runtime client's frames (the default traceback depth).
        assert (t["top"][0]["file"], t["top"][0]["line"]) == (app, 8), t["top"]
        assert t["growth_bytes"] is None
    for i, rid in enumerate(ids):
        kind, body = api.responses[rid]
        assert kind == "response"
        assert json.loads(body) == {"statusCode": 200, "n": i + 1, "rid": rid}
    assert len(intake.hellos) == 1 and intake.hellos[0]["pid"] == proc.pid
