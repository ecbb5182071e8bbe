"""Simulated CloudWatch Logs subscription: deterministic batches shaped like the real event.

A subscription filter delivers `{"awslogs": {"data": base64(gzip(json))}}` to the function. Each
batch here comes from a fresh log stream (new containers of the application) and announces the
deletion of a stream seen two batches earlier, the way short-lived streams come and go.
"""

from __future__ import annotations

import base64
import gzip
import json
import random

LOG_GROUP = "/aws/ecs/checkout-api"
SERVICES = ("checkout", "payments", "inventory", "auth", "search")
LEVELS = ("INFO",) * 6 + ("WARN",) * 2 + ("ERROR",)
ERRORS = (
    "TimeoutError: upstream payments-gateway did not answer in 3000 ms",
    "KeyError: 'sku'",
    "ConnectionResetError: [Errno 104] Connection reset by peer",
    "ValidationError: quantity must be positive",
)


def stream_name(seq: int) -> str:
    return f"checkout-api/app/{seq:032x}"


def _stack_trace(rng: random.Random, service: str) -> str:
    frames = [
        f'  File "/app/{service}/{rng.choice(("views", "models", "client"))}.py", '
        f"line {rng.randint(10, 900)}, in {rng.choice(('handle', 'fetch', 'save', 'call'))}"
        for _ in range(rng.randint(8, 20))
    ]
    return "Traceback (most recent call last):\n" + "\n".join(frames)


def make_batch(seq: int, size: int = 200) -> dict:
    """The decoded subscription payload for batch number `seq` (same `seq`, same batch)."""
    rng = random.Random(seq)
    base_ms = 1_764_000_000_000 + seq * 60_000
    events = []
    for n in range(size):
        service = rng.choice(SERVICES)
        level = rng.choice(LEVELS)
        message = (
            f"{level} {service} request_id={rng.getrandbits(64):016x} "
            f"path=/api/{service}/{rng.randint(1, 500)} latency_ms={rng.randint(1, 900)}"
        )
        if level == "ERROR":
            message += f" error={rng.choice(ERRORS)!r}\n{_stack_trace(rng, service)}"
        events.append({"id": f"{seq:08d}{n:04d}", "timestamp": base_ms + n * 7, "message": message})
    return {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": LOG_GROUP,
        "logStream": stream_name(seq),
        "subscriptionFilters": ["errors-to-aggregator"],
        "logEvents": events,
        # Not part of the real payload: the stream-lifecycle feed this aggregator also consumes.
        "deletedStreams": [stream_name(seq - 2)] if seq >= 2 else [],
    }


def sample_event(seq: int) -> dict:
    """The Lambda event for batch `seq`, encoded as CloudWatch Logs delivers it."""
    raw = json.dumps(make_batch(seq)).encode()
    return {"awslogs": {"data": base64.b64encode(gzip.compress(raw, 1)).decode()}}


def decode(event: dict) -> bytes:
    return gzip.decompress(base64.b64decode(event["awslogs"]["data"]))
