"""The example records of docs/protocol.md (``tests/fixtures/protocol/*.json``) against what the
decorator writes, and the decorator's protocol constants against the protocol crate's.

The same files are read by the extension's parser (src/sources/intake.rs) and by the Rust
layer's encoder tests (rust-layer/tests/layer.rs): a change of the wire format that one side
makes and another does not fails one of the three.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
from conftest import PROTOCOL, ROOT, check_invocation
from lambda_memory_profiler import _config, _handoff, memory_profile
from lambda_memory_profiler._record import AGENT, RUNTIME

FIXTURES = ROOT / "tests" / "fixtures" / "protocol"
CRATE = ROOT / "protocol" / "src" / "lib.rs"
# The examples of the Python decorator's records; the others are the Rust layer's.
PYTHON_FIXTURES = ("hello.json", "hello-sink.json", "invocation-v1.json", "invocation-v2.json")


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def shape(value: Any) -> Any:
    """The JSON shape of a value: its keys, recursively, and the type of every leaf (an
    integer is not a float)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def test_the_docs_examples_are_the_fixtures():
    fixtures = {p.name: json.loads(p.read_text()) for p in FIXTURES.glob("*.json")}
    assert set(PYTHON_FIXTURES) <= set(fixtures), sorted(fixtures)
    doc = PROTOCOL.read_text()
    blocks = re.findall(r"```json\n(.*?)```", doc, re.S)
    assert blocks
    for block in blocks:
        assert json.loads(block) in fixtures.values(), f"not a fixture file: {block[:80]}"
    for name in fixtures:
        assert f"(../tests/fixtures/protocol/{name})" in doc, f"docs/protocol.md links no {name}"


def test_the_v2_invocation_is_what_the_encoder_writes():
    f = fixture("invocation-v2.json")
    assert json.loads(_handoff.encode(f)) == f
    # The every-invocation path, straight from the figures.
    g = f["gc"]
    data = _handoff.encode_invocation(
        f["request_id"],
        f["pid"],
        f["runtime"],
        f["start_ms"],
        f["duration_ms"],
        f["cold_start"],
        f["error_type"],
        f["rss_peak_bytes"],
        f["rss_peak_scope"],
        f["heap_blocks"],
        g["collections"],
        g["collected"],
        g["uncollectable"],
        g["garbage"],
        trace_json=json.dumps(f["trace"]),
        anon_bytes=f["anon_bytes"],
        heap=f["heap"],
    )
    decoded = json.loads(data)
    assert decoded == f
    assert shape(decoded) == shape(f)
    assert json.loads(_handoff.encode_heap(f["heap"])) == f["heap"]
    assert len(data) <= _handoff.MAX_DATAGRAM
    check_invocation(decoded)


def test_a_v1_invocation_is_the_v2_record_without_heap():
    v1 = fixture("invocation-v1.json")
    assert v1["v"] == 1 and "heap" not in v1
    decoded = json.loads(_handoff.encode(v1))
    # The encoder writes the newest version: every v1 field as it was, `heap` added.
    assert decoded == dict(v1, v=_handoff.PROTOCOL_VERSION, heap=None)
    v2 = fixture("invocation-v2.json")
    assert dict(v2, v=1, heap=None) == dict(v1, heap=None)


@pytest.mark.parametrize(
    "name, sink_args",
    [
        ("hello.json", {}),
        (
            "hello-sink.json",
            {
                "namespace": "Team/Checkout",
                "dimensions": "FunctionName,FunctionVersion",
                "storage_resolution": 1,
            },
        ),
    ],
)
def test_the_hello_fixtures_are_what_the_decorator_sends(intake, lmp_env, name, sink_args):
    f = fixture(name)
    # The sender, from the fixture's own values: the same record but for the process id.
    sender = _handoff.Sender(intake.port)
    sender.hello(f["runtime"], f["agent"], f.get("sink"))
    assert json.loads(intake.sock.recv(65536)) == dict(f, pid=os.getpid())
    sender.close()
    # The decorator's own hellos: at decoration, presence only (no `sink`); the sink arguments
    # with the handler's first record, so the handler Lambda invokes is the one whose
    # arguments the extension takes.
    handler = memory_profile(intake_port=intake.port, **sink_args)(lambda event, context: None)
    hello = json.loads(intake.sock.recv(65536))
    plain = fixture("hello.json")
    assert hello == dict(plain, pid=os.getpid(), runtime=RUNTIME, agent=AGENT)
    if sink_args:
        handler({}, None)
        with_sink = json.loads(intake.sock.recv(65536))
        assert shape(with_sink) == shape(f)
        assert with_sink == dict(f, pid=os.getpid(), runtime=RUNTIME, agent=AGENT)
        record = json.loads(intake.sock.recv(65536))
        assert record["kind"] == "invocation"
        handler({}, None)
        assert json.loads(intake.sock.recv(65536))["kind"] == "invocation", "sent once"
    assert re.fullmatch(r"python3\.\d+", f["runtime"])
    assert AGENT.split("/")[0] == f["agent"].split("/")[0]


def _crate_const(name: str) -> str:
    text = CRATE.read_text()
    m = re.search(rf"^pub const {name}: [^=]+= (.+);$", text, re.M)
    assert m, f"no {name} in {CRATE}"
    return m.group(1)


def test_the_decorators_constants_are_the_protocol_crates():
    assert int(_crate_const("MAX_DATAGRAM").replace("_", "")) == _handoff.MAX_DATAGRAM
    assert int(_crate_const("DEFAULT_INTAKE_PORT")) == _config.DEFAULT_INTAKE_PORT
    assert json.loads(_crate_const("DEFAULT_NAMESPACE")) == _config.DEFAULT_NAMESPACE
    names = re.fullmatch(r"\[(.*)\]", _crate_const("PROTOCOL_VERSIONS"))
    assert names
    versions = [int(_crate_const(n.strip())) for n in names.group(1).split(",")]
    # The decorator sends the newest version the extension accepts.
    assert max(versions) == _handoff.PROTOCOL_VERSION, versions


def test_of_two_decorated_handlers_the_invoked_ones_sink_arguments_are_sent(intake, lmp_env):
    # Both decorated at import: one presence hello, no sink yet.
    first = memory_profile(intake_port=intake.port, namespace="Team/First")(lambda e, c: None)
    second = memory_profile(intake_port=intake.port, namespace="Team/Second", storage_resolution=1)(
        lambda e, c: None
    )
    assert "sink" not in json.loads(intake.sock.recv(65536))
    # Lambda invokes the second: its arguments go out, with its first record.
    second({}, None)
    hello = json.loads(intake.sock.recv(65536))
    assert hello["kind"] == "hello"
    assert hello["sink"] == {"namespace": "Team/Second", "storage_resolution": 1}
    assert json.loads(intake.sock.recv(65536))["kind"] == "invocation"
    # The first, invoked later, sends its own (the extension keeps the one it took first).
    first({}, None)
    assert json.loads(intake.sock.recv(65536))["sink"] == {"namespace": "Team/First"}
