"""Hand-off: datagram limits, the EMF fallback without an extension, configuration."""

from __future__ import annotations

import json

import pytest
from conftest import check_emf, check_invocation, free_udp_port, protocol_example
from lambda_memory_profiler import _config, _handoff, memory_profile
from lambda_memory_profiler._config import resolve


def test_protocol_example_round_trips_through_the_encoder():
    example = protocol_example("invocation")
    decoded = json.loads(_handoff.encode(example))
    assert decoded == example
    check_invocation(decoded)
    untraced = dict(example, trace=None, error_type="ValueError", rss_peak_bytes=None)
    assert json.loads(_handoff.encode(untraced)) == untraced


def test_encoder_escapes_strings():
    example = protocol_example("invocation")
    odd = dict(example, request_id='quote " back \\ ctl \x01 é', error_type="Ünïcode")
    assert json.loads(_handoff.encode(odd)) == odd


def test_heap_sites_encode_alike_whether_their_names_were_seen_or_not():
    # A site's names are encoded once and reused; its figures change at every record.
    site = {"file": 'odd "dir"/é.py', "line": 7, "function": "f\\g", "delta_bytes": -5}
    heap = {
        "live_bytes": 1 << 40,
        "peak_bytes": 2,
        "allocated_bytes": 3,
        "sample_bytes": 16384,
        "samples": 4,
        "dropped": 0,
        "epoch": 1,
        "sites": [dict(site, live_bytes=10), dict(site, via="lib\x01.py:3", live_bytes=0)],
        "sites_truncated": 0,
    }
    first = json.loads(_handoff.encode_heap(heap))
    assert first == heap
    again = dict(heap, sites=[dict(s, delta_bytes=99) for s in heap["sites"]])
    assert json.loads(_handoff.encode_heap(again)) == again
    # Past the cap of names kept, they are dropped whole and encoded again.
    for i in range(_handoff._MAX_SITE_HEADS + 1):
        _handoff.encode_heap(dict(heap, sites=[dict(site, line=i, live_bytes=0)]))
    assert len(_handoff._site_heads) <= _handoff._MAX_SITE_HEADS
    assert json.loads(_handoff.encode_heap(heap)) == heap


def _many_sites(n: int, name_len: int) -> str:
    """Source of a handler allocating from n distinct lines of a long-named file."""
    lines = ["def handler(event, context):", "    keep = []"]
    for i in range(n):
        lines.append(f"    keep.append(bytearray({1000 + i}))")
    lines.append("    KEPT.append(keep)")
    lines.append("    return None")
    return "\n".join(lines)


def test_oversized_record_drops_the_smallest_sites_to_fit(intake):
    namespace = {"KEPT": []}
    filename = "/var/task/" + "deeply/nested/" * 20 + "handler.py"
    exec(compile(_many_sites(100, len(filename)), filename, "exec"), namespace)
    handler = memory_profile(sample_rate=1.0, top=100, intake_port=intake.port)(
        namespace["handler"]
    )
    handler({}, None)
    rec = intake.next()
    check_invocation(rec)
    assert intake.max_size <= _handoff.MAX_DATAGRAM
    t = rec["trace"]
    assert t["top_truncated"] > 0
    assert len(t["top"]) + t["top_truncated"] >= 100
    sizes = [s["size"] for s in t["top"]]
    assert sizes == sorted(sizes, reverse=True)
    # The largest sites survive: the kept ones are the biggest allocations.
    assert min(sizes) >= 1000 + t["top_truncated"] - 1


def test_without_extension_each_invocation_prints_one_emf_line(capfd, lmp_env):
    lmp_env.setenv("LMP_NAMESPACE", "TestSpace")
    lmp_env.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders-api")
    port = free_udp_port()  # nobody listens there
    kept = []

    @memory_profile(sample_rate=1.0, intake_port=port)
    def handler(event, context):
        kept.append(bytearray(4000))  # the leaking line
        return [bytes(2000) for _ in range(10)]

    line = handler.__wrapped__.__code__.co_firstlineno + 2
    capfd.readouterr()
    for _ in range(3):
        handler({}, None)
    out = capfd.readouterr().out.splitlines()
    # None lost: the record whose send revealed the absence was printed as well.
    assert len(out) == 3, out
    for text in out:
        doc = check_emf(text, "TestSpace")
        assert doc["FunctionName"] == "orders-api"
        assert doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["FunctionName"]]
        assert doc["PythonHeapPeak"] >= 20000
        assert doc["PythonHeapRetained"] >= 20000  # the response is live at the end
        assert doc["Duration"] >= 0 and doc["ColdStart"] == 0
        # Own-mode tracing claims no growth: no datum, rather than a made-up one.
        names = {m["Name"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
        assert "PythonHeapGrowth" not in names and "PythonHeapGrowth" not in doc
        # The response is not a site; the leak is.
        assert isinstance(doc["TopSites"], list) and doc["TopSites"]
        assert (doc["TopSites"][0]["file"], doc["TopSites"][0]["line"]) == (__file__, line)
        assert doc["RequestId"] == ""


def test_emf_line_honours_dimensions_and_resolution(capfd, lmp_env):
    lmp_env.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders-api")
    lmp_env.setenv("AWS_LAMBDA_FUNCTION_VERSION", "7")
    lmp_env.setenv("LMP_DIMENSIONS", "FunctionName,FunctionVersion")
    lmp_env.setenv("LMP_STORAGE_RESOLUTION", "1")

    @memory_profile(trace=False, intake_port=free_udp_port())
    def handler(event, context):
        return None

    capfd.readouterr()
    handler({}, None)
    handler({}, None)
    lines = capfd.readouterr().out.splitlines()
    assert len(lines) == 2
    doc = check_emf(lines[-1], "LambdaMemoryProfiler")
    d = doc["_aws"]["CloudWatchMetrics"][0]
    # {FunctionName} always, the full set too (as the extension publishes).
    assert d["Dimensions"] == [["FunctionName"], ["FunctionName", "FunctionVersion"]]
    assert doc["FunctionVersion"] == "7"
    assert all(m["StorageResolution"] == 1 for m in d["Metrics"])
    names = {m["Name"] for m in d["Metrics"]}
    # Untraced: no heap figures, never zeros in their place.
    assert "PythonHeapPeak" not in names and "PythonHeapPeak" not in doc
    assert {"Duration", "GcCollections", "RuntimeRssPeak"} <= names


def test_bad_environment_values_warn_once_and_use_defaults(capfd, lmp_env):
    lmp_env.setenv("LMP_SAMPLE_RATE", "lots")
    lmp_env.setenv("LMP_TOP", "-1")
    lmp_env.setenv("LMP_INTAKE_PORT", "70000")
    lmp_env.setenv("LMP_TRACE", "maybe")
    capfd.readouterr()
    a = resolve({})
    b = resolve({})
    err = capfd.readouterr().err
    for name in ("LMP_SAMPLE_RATE", "LMP_TOP", "LMP_INTAKE_PORT", "LMP_TRACE"):
        assert err.count(name) == 1, err
    assert a.sample_rate == b.sample_rate == 0.01
    assert a.top == 10 and a.intake_port == 4243 and a.trace is True


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("LMP_TRACE_COLD", "sometimes"),
        ("LMP_NATIVE", "2"),
        ("LMP_HEAP_SAMPLE_BYTES", "255"),
        ("LMP_HEAP_SAMPLE_BYTES", "67108865"),
        ("LMP_HEAP_SAMPLE_BYTES", "64k"),
        ("LMP_HEAP_FRAMES", "0"),
        ("LMP_HEAP_FRAMES", "65"),
        ("LMP_HEAP_FRAMES", "1.5"),
    ],
)
def test_bad_cold_and_native_values_warn_once_and_use_defaults(capfd, lmp_env, var, raw):
    # A fresh warning memory: the property tests may have warned about this value already.
    lmp_env.setattr(_config, "_warned", set())
    lmp_env.setenv(var, raw)
    capfd.readouterr()
    a = resolve({})
    b = resolve({})
    err = capfd.readouterr().err
    assert err.count(var) == 1, err
    for o in (a, b):
        assert o.trace_cold is False and o.native is True
        assert (o.heap_sample_bytes, o.heap_frames) == (16384, 16)


def test_cold_and_native_options_defaults_bounds_and_arguments(lmp_env):
    o = resolve({})
    assert (o.trace_cold, o.native, o.heap_sample_bytes, o.heap_frames) == (False, True, 16384, 16)
    lmp_env.setenv("LMP_TRACE_COLD", "yes")
    lmp_env.setenv("LMP_NATIVE", "off")
    lmp_env.setenv("LMP_HEAP_SAMPLE_BYTES", "256")
    lmp_env.setenv("LMP_HEAP_FRAMES", "64")
    o = resolve({})
    assert (o.trace_cold, o.native, o.heap_sample_bytes, o.heap_frames) == (True, False, 256, 64)
    lmp_env.setenv("LMP_HEAP_SAMPLE_BYTES", "67108864")
    lmp_env.setenv("LMP_HEAP_FRAMES", "1")
    o = resolve({})
    assert (o.heap_sample_bytes, o.heap_frames) == (67108864, 1)
    # Arguments win over the variables.
    o = resolve({"trace_cold": False, "native": True, "heap_sample_bytes": 4096, "heap_frames": 8})
    assert (o.trace_cold, o.native, o.heap_sample_bytes, o.heap_frames) == (False, True, 4096, 8)
    opts = memory_profile(trace_cold=True, native=False, heap_frames=3)(lambda e, c: None)
    assert opts.__lmp_options__.trace_cold is True
    assert opts.__lmp_options__.native is False and opts.__lmp_options__.heap_frames == 3


def test_environment_gives_defaults_and_arguments_win(lmp_env):
    lmp_env.setenv("LMP_SAMPLE_RATE", "0.25")
    lmp_env.setenv("LMP_TOP", "3")
    lmp_env.setenv("LMP_TRACE", "off")
    lmp_env.setenv("LMP_INTAKE_PORT", "5000")
    o = resolve({})
    assert (o.sample_rate, o.top, o.trace, o.intake_port) == (0.25, 3, False, 5000)
    o = resolve({"sample_rate": 0.5, "top": 7, "trace": True})
    assert (o.sample_rate, o.top, o.trace) == (0.5, 7, True)


def test_bad_arguments_fail_at_decoration_time():
    def handler(event, context):
        return None

    with pytest.raises(ValueError):
        memory_profile(sample_rate=2.0)(handler)
    with pytest.raises(ValueError):
        memory_profile(top=-5)
    with pytest.raises(TypeError):
        memory_profile(trace="yes")
    with pytest.raises(TypeError):
        memory_profile(trace_cold=1)
    with pytest.raises(TypeError):
        memory_profile(native="false")
    with pytest.raises(ValueError):
        memory_profile(heap_sample_bytes=255)
    with pytest.raises(ValueError):
        memory_profile(heap_sample_bytes=1 << 27)
    with pytest.raises(ValueError):
        memory_profile(heap_sample_bytes=65536.5)
    with pytest.raises(TypeError):
        memory_profile(heap_sample_bytes="65536")
    with pytest.raises(ValueError):
        memory_profile(heap_frames=0)
    with pytest.raises(ValueError):
        memory_profile(heap_frames=65)
    with pytest.raises(TypeError):
        memory_profile(heap_frames=True)


def test_emf_leaves_out_a_lifetime_rss_peak():
    example = dict(protocol_example("invocation"), rss_peak_scope="process")
    doc = check_emf(_handoff.emf_line(example, "NS"), "NS")
    names = {m["Name"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert "RuntimeRssPeak" not in names and "RuntimeRssPeak" not in doc
    assert doc["RssPeakBytes"] == example["rss_peak_bytes"]
    doc = check_emf(_handoff.emf_line(protocol_example("invocation"), "NS"), "NS")
    assert doc["RuntimeRssPeak"] == example["rss_peak_bytes"]
    assert doc["TopSites"] == example["trace"]["top"]


def test_emf_carries_growth_only_when_the_record_has_it():
    example = protocol_example("invocation")
    assert example["trace"]["mode"] == "own" and example["trace"]["growth_bytes"] is None
    doc = check_emf(_handoff.emf_line(example, "NS"), "NS")
    names = {m["Name"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert "PythonHeapGrowth" not in names and "PythonHeapGrowth" not in doc
    assert doc["PythonHeapRetained"] == example["trace"]["retained_bytes"]
    # A shared session's net figure may be negative (the heap shrank): still a datum.
    shared = dict(example["trace"], mode="shared", growth_bytes=-4096, retained_bytes=0)
    doc = check_emf(_handoff.emf_line(dict(example, trace=shared), "NS"), "NS")
    assert doc["PythonHeapGrowth"] == -4096
    assert "PythonHeapGrowth" in {m["Name"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
