"""Options of the decorator and their ``LMP_*`` environment defaults."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from typing import Callable, TypeVar

T = TypeVar("T")

DEFAULT_SAMPLE_RATE = 0.01
DEFAULT_TOP = 10
DEFAULT_INTAKE_PORT = 4243
DEFAULT_NAMESPACE = "LambdaMemoryProfiler"
DEFAULT_SUSPECT_WINDOW = 8
DEFAULT_TRACE_BUDGET_US = 10.0
DEFAULT_TRACE_FRAMES = 16
# The native heap sampler: mean bytes allocated between two samples, frames kept per sample.
DEFAULT_HEAP_SAMPLE_BYTES = 16384
DEFAULT_HEAP_FRAMES = 16

# One warning per (variable, value): a bad value must be visible in the logs but must not
# repeat on every decorated function or every invocation.
_warned: set[tuple[str, str]] = set()


def _warn(name: str, raw: str, reason: str, default: object) -> None:
    key = (name, raw)
    if key in _warned:
        return
    _warned.add(key)
    # A closed stderr must not break the handler.
    with contextlib.suppress(Exception):
        sys.stderr.write(
            f"lambda_memory_profiler: ignoring {name}={raw!r} ({reason}); using {default!r}\n"
        )


def _parse_bool(raw: str) -> bool:
    v = raw.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true/false")


def _parse_rate(raw: str) -> float:
    v = float(raw)
    if not (0.0 <= v <= 1.0):  # also rejects NaN
        raise ValueError("expected a number in [0, 1]")
    return v


def _parse_top(raw: str) -> int:
    v = int(raw)
    if not (0 <= v <= 100):
        raise ValueError("expected an integer in [0, 100]")
    return v


def _parse_port(raw: str) -> int:
    v = int(raw)
    if not (1 <= v <= 65535):
        raise ValueError("expected a port in [1, 65535]")
    return v


def _parse_window(raw: str) -> int:
    v = int(raw)
    if not (0 <= v <= 1000):
        raise ValueError("expected an integer in [0, 1000]")
    return v


def _parse_budget(raw: str) -> float:
    v = float(raw)
    if not (0.0 <= v <= 1_000_000.0):
        raise ValueError("expected microseconds in [0, 1000000]")
    return v


def _parse_frames(raw: str) -> int:
    v = int(raw)
    if not (1 <= v <= 32):
        raise ValueError("expected an integer in [1, 32]")
    return v


def _parse_sample_bytes(raw: str) -> int:
    v = int(raw)
    if not (256 <= v <= 67_108_864):
        raise ValueError("expected bytes in [256, 67108864]")
    return v


def _parse_heap_frames(raw: str) -> int:
    v = int(raw)
    if not (1 <= v <= 64):
        raise ValueError("expected an integer in [1, 64]")
    return v


def _parse_namespace(raw: str) -> str:
    v = raw.strip()
    # CloudWatch namespaces: 1-255 characters, no leading colon.
    if not v or len(v) > 255 or v.startswith(":"):
        raise ValueError("expected 1-255 characters, not starting with ':'")
    return v


def _parse_resolution(raw: str) -> int:
    v = int(raw)
    if v not in (1, 60):
        raise ValueError("expected 1 or 60")
    return v


def _parse_dimensions(raw: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in raw.split(",") if p.strip())
    allowed = ("FunctionName", "FunctionVersion")
    if "FunctionName" not in parts or any(p not in allowed for p in parts):
        raise ValueError("expected FunctionName or FunctionName,FunctionVersion")
    return tuple(p for p in allowed if p in parts)


def _env(env: Mapping[str, str], name: str, parse: Callable[[str], T], default: T) -> T:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return parse(raw)
    except (ValueError, TypeError) as exc:
        _warn(name, raw, str(exc), default)
        return default


class Options:
    """Resolved options of one decorated function."""

    __slots__ = (
        "disable",
        "trace",
        "sample_rate",
        "top",
        "intake_port",
        "namespace",
        "suspect_window",
        "storage_resolution",
        "dimensions",
        "trace_budget_us",
        "frames",
        "trace_cold",
        "native",
        "heap_sample_bytes",
        "heap_frames",
    )

    def __init__(
        self,
        disable: bool,
        trace: bool,
        sample_rate: float,
        top: int,
        intake_port: int,
        namespace: str,
        suspect_window: int,
        storage_resolution: int,
        dimensions: tuple[str, ...],
        trace_budget_us: float,
        frames: int,
        trace_cold: bool,
        native: bool,
        heap_sample_bytes: int,
        heap_frames: int,
    ) -> None:
        self.disable = disable
        self.trace = trace
        self.sample_rate = sample_rate
        self.top = top
        self.intake_port = intake_port
        self.namespace = namespace
        self.suspect_window = suspect_window
        self.storage_resolution = storage_resolution
        self.dimensions = dimensions
        self.trace_budget_us = trace_budget_us
        self.frames = frames
        # Trace the process's first invocation with tracemalloc (reason "cold"), outside the
        # budget: an explicit request, as sample_rate=1 is.
        self.trace_cold = trace_cold
        # The native heap sampler, where its module is present (else the tracemalloc path only).
        self.native = native
        self.heap_sample_bytes = heap_sample_bytes
        self.heap_frames = heap_frames

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"Options({fields})"


def _check(name: str, value: object, parse: Callable[[str], T]) -> T:
    """Validates an explicit keyword argument with the same rules as its variable."""
    if parse is _parse_bool:
        if not isinstance(value, bool):
            raise TypeError(f"memory_profile: {name} must be a bool, not {value!r}")
        return value  # type: ignore[return-value]
    wants_str = parse in (_parse_namespace, _parse_dimensions)
    if isinstance(value, bool) or (
        not isinstance(value, str) if wants_str else not isinstance(value, (int, float))
    ):
        raise TypeError(f"memory_profile: bad type for {name}: {value!r}")
    try:
        return parse(str(value))
    except ValueError as exc:
        # A wrong argument is a programming error: it fails at import, not at invocation.
        raise ValueError(f"memory_profile: bad {name}={value!r}: {exc}") from None


def resolve(overrides: dict[str, object], env: Mapping[str, str] | None = None) -> Options:
    """Builds the options: explicit arguments win, then ``LMP_*`` variables, then defaults."""
    e: Mapping[str, str] = os.environ if env is None else env
    table = (
        ("disable", "LMP_DISABLE", _parse_bool, False),
        ("trace", "LMP_TRACE", _parse_bool, True),
        ("sample_rate", "LMP_SAMPLE_RATE", _parse_rate, DEFAULT_SAMPLE_RATE),
        ("top", "LMP_TOP", _parse_top, DEFAULT_TOP),
        ("intake_port", "LMP_INTAKE_PORT", _parse_port, DEFAULT_INTAKE_PORT),
        ("namespace", "LMP_NAMESPACE", _parse_namespace, DEFAULT_NAMESPACE),
        ("suspect_window", "LMP_SUSPECT_WINDOW", _parse_window, DEFAULT_SUSPECT_WINDOW),
        ("storage_resolution", "LMP_STORAGE_RESOLUTION", _parse_resolution, 60),
        ("dimensions", "LMP_DIMENSIONS", _parse_dimensions, ("FunctionName",)),
        ("trace_budget_us", "LMP_TRACE_BUDGET_US", _parse_budget, DEFAULT_TRACE_BUDGET_US),
        ("frames", "LMP_TRACE_FRAMES", _parse_frames, DEFAULT_TRACE_FRAMES),
        ("trace_cold", "LMP_TRACE_COLD", _parse_bool, False),
        ("native", "LMP_NATIVE", _parse_bool, True),
        (
            "heap_sample_bytes",
            "LMP_HEAP_SAMPLE_BYTES",
            _parse_sample_bytes,
            DEFAULT_HEAP_SAMPLE_BYTES,
        ),
        ("heap_frames", "LMP_HEAP_FRAMES", _parse_heap_frames, DEFAULT_HEAP_FRAMES),
    )
    values: dict[str, object] = {}
    for key, var, parse, default in table:
        if key in overrides and overrides[key] is not None:
            values[key] = _check(key, overrides[key], parse)  # type: ignore[arg-type]
        else:
            values[key] = _env(e, var, parse, default)  # type: ignore[arg-type]
    unknown = set(overrides) - {row[0] for row in table}
    if unknown:
        raise TypeError(f"memory_profile: unknown option(s) {sorted(unknown)}")
    return Options(**values)  # type: ignore[arg-type]
