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
]

values = st.one_of(
    st.text(max_size=24),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "nan", "inf", "-0", "1e999", "0x10", "true", "False", "１"]),
)


@settings(deadline=None)
@given(env=st.dictionaries(st.sampled_from(VARS), values, max_size=len(VARS)))
def test_any_environment_resolves_to_valid_options(env):
    with redirect_stderr(io.StringIO()) as err:
        opts = resolve({}, env)
    assert isinstance(opts.disable, bool) and isinstance(opts.trace, bool)
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
