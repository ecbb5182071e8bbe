"""Property tests of the decorator's configuration parsers (hypothesis): any environment value,
however odd, yields a valid option or the default with one warning — never an exception, never
a value outside its documented range."""

from __future__ import annotations

import io
from contextlib import redirect_stderr

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from lambda_memory_profiler._config import resolve  # noqa: E402

VARS = [
    "LMP_DISABLE",
    "LMP_TRACE",
    "LMP_SAMPLE_RATE",
    "LMP_TOP",
    "LMP_INTAKE_PORT",
    "LMP_NAMESPACE",
    "LMP_SUSPECT_WINDOW",
    "LMP_STORAGE_RESOLUTION",
    "LMP_DIMENSIONS",
    "LMP_TRACE_BUDGET_US",
    "LMP_TRACE_FRAMES",
    "LMP_TRACE_COLD",
    "LMP_NATIVE",
    "LMP_HEAP_SAMPLE_BYTES",
    "LMP_HEAP_FRAMES",
]

values = st.one_of(
    st.text(max_size=24),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "nan", "inf", "-0", "1e999", "0x10", "true", "False", "１"]),
    st.sampled_from(["255", "256", "65536", "67108864", "67108865", "0", "1", "64", "65"]),
)


@settings(deadline=None)
@given(env=st.dictionaries(st.sampled_from(VARS), values, max_size=len(VARS)))
def test_any_environment_resolves_to_valid_options(env):
    with redirect_stderr(io.StringIO()) as err:
        opts = resolve({}, env)
    assert isinstance(opts.disable, bool) and isinstance(opts.trace, bool)
    assert isinstance(opts.trace_cold, bool) and isinstance(opts.native, bool)
    assert type(opts.heap_sample_bytes) is int and 256 <= opts.heap_sample_bytes <= 67_108_864
    assert type(opts.heap_frames) is int and 1 <= opts.heap_frames <= 64
    assert 0.0 <= opts.sample_rate <= 1.0
    assert 0 <= opts.top <= 100
    assert 1 <= opts.intake_port <= 65535
    assert opts.storage_resolution in (1, 60)
    assert 1 <= opts.frames <= 32
    assert opts.suspect_window >= 0
    assert 0 <= opts.trace_budget_us <= 1_000_000
    assert opts.namespace and len(opts.namespace) <= 255
    assert opts.dimensions and opts.dimensions[0] == "FunctionName"
    # At most one warning line per variable given.
    assert err.getvalue().count("\n") <= len(env)


@settings(deadline=None)
@given(rate=st.floats(min_value=0.0, max_value=1.0), frames=st.integers(1, 32))
def test_valid_values_come_out_as_they_went_in(rate, frames):
    opts = resolve({}, {"LMP_SAMPLE_RATE": repr(rate), "LMP_TRACE_FRAMES": str(frames)})
    assert opts.sample_rate == rate
    assert opts.frames == frames


@settings(deadline=None)
@given(
    sample_bytes=st.integers(256, 67_108_864),
    heap_frames=st.integers(1, 64),
    cold=st.booleans(),
    native=st.booleans(),
)
def test_valid_native_values_come_out_as_they_went_in(sample_bytes, heap_frames, cold, native):
    env = {
        "LMP_HEAP_SAMPLE_BYTES": str(sample_bytes),
        "LMP_HEAP_FRAMES": str(heap_frames),
        "LMP_TRACE_COLD": str(cold).lower(),
        "LMP_NATIVE": "1" if native else "0",
    }
    with redirect_stderr(io.StringIO()) as err:
        opts = resolve({}, env)
    assert err.getvalue() == ""
    assert (opts.heap_sample_bytes, opts.heap_frames) == (sample_bytes, heap_frames)
    assert (opts.trace_cold, opts.native) == (cold, native)


@settings(deadline=None)
@given(value=st.integers(-(10**12), 10**12))
def test_out_of_range_sample_bytes_argument_raises(value):
    if 256 <= value <= 67_108_864:
        assert resolve({"heap_sample_bytes": value}, {}).heap_sample_bytes == value
    else:
        with pytest.raises(ValueError):
            resolve({"heap_sample_bytes": value}, {})
