"""The native module's fast paths of the every-invocation record, against the pure-Python ones
they replace when the sampler runs: the memory probes (``_native.maxrss_kib``,
``_native.anon_bytes``, pyheap/src/probes.rs) read the same figures as ``_probes``, and the
encoder of the record (``_native.encode_invocation``, pyheap/
src/record.rs) against the pure-Python one (``_handoff.encode_invocation``): the same bytes for
every record, or None, so that the decorator uses Python's, for what it does not handle exactly
as Python would.

The inputs are drawn from a seeded generator (the per-version venvs carry pytest only), with the
awkward values of each field: every escape, characters above the BMP, None wherever a field may
be None, negative and 64-bit extremes, floats at rounding ties.
"""

from __future__ import annotations

import json
import os
import random

import pytest
from lambda_memory_profiler import _handoff, _heap, _probes, memory_profile
from lambda_memory_profiler._config import resolve

try:
    from lambda_memory_profiler import _native

    HAVE_NATIVE = True
except ImportError:
    HAVE_NATIVE = False

pytestmark = pytest.mark.skipif(
    not HAVE_NATIVE, reason="the native module is not built for this interpreter"
)

_ODD_TEXT = [
    "",
    "abc-123",
    'quote " back \\ slash',
    "\n\r\t\b\f",
    "\x00\x01\x1f\x7f",
    "é€ Ünïcode",
    "😀 🐍",
    "/var/task/app.py",
    "a" * 300,
]
_FLOATS = [0.0, -0.0, 0.25, 0.35, 0.0625, 0.0005, 0.0015, 1e-9, 123.456789, 1764657732123.45]
_INTS = [0, 1, -1, 7, 4096, -(1 << 31), (1 << 40), (1 << 63) - 1, -(1 << 63)]


def _text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(_ODD_TEXT)
    return "".join(
        chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x3000)]))
        for _ in range(rng.randrange(12))
    )


def _int(rng: random.Random) -> int:
    return rng.choice(_INTS) if rng.random() < 0.4 else rng.randrange(-(10**12), 10**12)


def _count(rng: random.Random) -> int:
    """A figure that cannot be negative (within 64 bits, as every figure of a record is)."""
    return min(abs(_int(rng)), (1 << 63) - 1)


def _float(rng: random.Random) -> float:
    return rng.choice(_FLOATS) if rng.random() < 0.4 else rng.uniform(0, 1e13) * rng.random() ** 8


def _maybe(rng: random.Random, value: object) -> object:
    return None if rng.random() < 0.25 else value


def _site(rng: random.Random) -> dict:
    site = {
        "file": _text(rng),
        "line": _count(rng),
        "function": _text(rng),
        "delta_bytes": _int(rng),
        "live_bytes": _count(rng),
    }
    if rng.random() < 0.5:
        site["via"] = _text(rng) if rng.random() < 0.8 else None
    return site


def _heap_object(rng: random.Random) -> dict:
    return {
        "live_bytes": _count(rng),
        "peak_bytes": _count(rng),
        "allocated_bytes": _count(rng),
        "sample_bytes": rng.choice([1, 16384, 65536]),
        "samples": _count(rng),
        "dropped": _count(rng),
        "epoch": rng.randrange(4),
        "sites": [_site(rng) for _ in range(rng.choice([0, 0, 1, 2, 5]))],
        "sites_truncated": rng.randrange(3),
    }


def _fields(rng: random.Random) -> tuple:
    return (
        _text(rng),
        rng.randrange(1, 1 << 22),
        rng.choice(["python3.11", "python3.9", _text(rng)]),
        _float(rng),
        _float(rng),
        rng.choice([True, False, 0, 1]),
        _maybe(rng, rng.choice(["ValueError", "MemoryError", _text(rng)])),
        _maybe(rng, _count(rng)),
        rng.choice(["invocation", "process", _text(rng)]),
        _maybe(rng, _int(rng)),
        rng.choice([0, 0, 0, 1, 3]),
        rng.choice([0, 0, 12, 1 << 33]),
        rng.choice([0, 0, 2]),
        _maybe(rng, rng.choice([0, 0, 5])),
        rng.choice(["null", '{"reason":"sampled","peak_bytes":1}']),
        _maybe(rng, _count(rng)),
        _maybe(rng, _heap_object(rng)),
    )


def test_native_and_python_encoders_write_the_same_bytes():
    rng = random.Random(20261202)
    for _ in range(5000):
        fields = _fields(rng)
        expected = _handoff.encode_invocation(*fields)
        got = _native.encode_invocation(_handoff.PROTOCOL_VERSION, *fields)
        assert got == expected, fields
    # And the record is the protocol's JSON (the Python encoder's own tests check its shape).
    assert json.loads(got)["v"] == _handoff.PROTOCOL_VERSION


def _base() -> list:
    rng = random.Random(1)
    fields = list(_fields(rng))
    fields[16] = _heap_object(rng)
    fields[16]["sites"] = [_site(rng)]
    return fields


@pytest.mark.parametrize(
    "index, value",
    [
        (0, "lone \ud800 surrogate"),  # not UTF-8: Python escapes it, this encoder does not
        (3, float("nan")),  # Python would write nan (not JSON): left to it
        (4, float("inf")),
        (7, 1 << 64),  # beyond 64 bits
        (9, 3.5),  # %d would truncate a float
        (1, "12"),  # a str where an int goes
        (14, None),  # the trace's JSON is a str
        (16, {"live_bytes": 1}),  # a heap object without its other keys
        (16, ["not", "a", "dict"]),
    ],
)
def test_what_the_native_encoder_does_not_handle_is_left_to_python(index, value):
    fields = _base()
    fields[index] = value
    assert _native.encode_invocation(_handoff.PROTOCOL_VERSION, *fields) is None
    # ...with no error left set: the next call works.
    ok = _base()
    assert _native.encode_invocation(_handoff.PROTOCOL_VERSION, *ok) == (
        _handoff.encode_invocation(*ok)
    )


def test_a_site_without_its_figures_or_with_a_bad_via_is_left_to_python():
    for change in ({"via": 7}, {"line": "7"}, {"delta_bytes": None}):
        fields = _base()
        fields[16]["sites"] = [dict(fields[16]["sites"][0], **change)]
        assert _native.encode_invocation(_handoff.PROTOCOL_VERSION, *fields) is None, change
    fields = _base()
    del fields[16]["sites"][0]["live_bytes"]
    assert _native.encode_invocation(_handoff.PROTOCOL_VERSION, *fields) is None
    for bad_count in ((), tuple(_base()[:3]), (*_base(), 1)):
        assert _native.encode_invocation(_handoff.PROTOCOL_VERSION, *bad_count) is None


def _profiler_of(wrapper) -> object:
    """The ``_Profiler`` a decorated function closes over."""
    return wrapper.__closure__[wrapper.__code__.co_freevars.index("prof")].cell_contents


KEPT: list = []


def _growing(event, context):
    KEPT.append([bytearray(2048) for _ in range(20)])  # sampled: the heap object has sites


def test_the_decorator_encodes_natively_with_the_sampler_only(intake, lmp_env):
    # A function with the sampler takes the native encoder, and each record it sends is the
    # Python encoding of the same fields; a function with native=False keeps Python's.
    on = memory_profile(_growing, trace=False, intake_port=intake.port, native=True)
    off = memory_profile(lambda e, c: None, trace=False, intake_port=intake.port, native=False)
    if _heap.process_heap(resolve({"native": True})) is None:
        pytest.skip("the sampler could not start here")
    assert _profiler_of(off).native_encode is None
    prof = _profiler_of(on)
    native_encode = prof.native_encode
    assert native_encode is _native.encode_invocation
    compared = []

    def checked(version, *fields):
        data = native_encode(version, *fields)
        assert data == _handoff.encode_invocation(*fields)
        compared.append(fields[16])
        return data

    prof.native_encode = checked
    try:
        for _ in range(30):
            on({}, None)
            record = intake.next()
            assert record["heap"] is not None
            off({}, None)
            assert intake.next()["heap"] is None
    finally:
        prof.native_encode = native_encode
        KEPT.clear()
    assert len(compared) == 30
    assert any(h["sites"] for h in compared), "some records named a growing site"


def test_native_probes_read_the_python_probes_figures():
    python_rss, native_rss = _probes.PeakRss(), _probes.PeakRss(_native)
    python_anon, native_anon = _probes.AnonMemory(), _probes.AnonMemory(_native)
    assert native_anon._native_read is not None and native_rss._native_maxrss is not None
    same_anon = 0
    for _ in range(50):
        kept = bytearray(1 << 20)  # the figures move between reads: most reads agree exactly
        before = python_anon.read()
        got = native_anon.read()
        after = python_anon.read()
        assert got is not None and before is not None and after is not None
        assert min(before, after) - (1 << 20) <= got <= max(before, after) + (1 << 20)
        same_anon += got == before == after
        assert native_rss.read() == python_rss.read()
        del kept
    assert same_anon >= 25
    assert native_rss.scope == python_rss.scope


def test_native_probes_report_no_figure_where_python_reports_none():
    probe = _probes.AnonMemory(_native)
    probe.close()
    assert probe.read() is None
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        assert _native.anon_bytes(fd, 4096) is None  # not a statm text
    finally:
        os.close(fd)
    assert _native.anon_bytes(-1, 4096) is None
    assert _native.anon_bytes("3", 4096) is None
    assert _native.anon_bytes() is None
    assert isinstance(_native.maxrss_kib(), int)
