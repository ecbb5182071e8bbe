"""Parameter-store cache (leaky): webhook sender that reads each tenant's config from SSM.

The cache has no size bound and no expiry and keeps whole API responses, so a warm environment
accumulates one response per tenant it ever served (and serves stale config forever). `fixed.py`
uses a bounded LRU cache with a TTL that keeps only the fields it uses. See examples/README.md.
"""

from __future__ import annotations

import json

from lambda_memory_profiler import memory_profile
from ssm_stub import SimulatedParameterStore, sample_event

_ssm = SimulatedParameterStore()
# LEAK (unbounded cache of full responses): keyed by parameter name, never evicted, never expired.
_cache: dict[str, dict] = {}
_invocations = 0


def get_config(name: str) -> dict:
    if name not in _cache:
        _cache[name] = _ssm.get_parameter(Name=name, WithDecryption=True)
    return json.loads(_cache[name]["Parameter"]["Value"])


@memory_profile
def handler(event: dict, context: object) -> dict:
    global _invocations
    _invocations += 1
    if "Records" not in event:
        event = sample_event(event.get("seq", _invocations))
    sent = 0
    for record in event["Records"]:
        config = get_config(f"/tenants/{json.loads(record['body'])['tenant_id']}/config")
        if config["feature_flags"].get("flag_0", True):
            sent += 1  # the HTTP call to config["webhook_url"] would go here
    return {"jobs": len(event["Records"]), "sent": sent, "ssm_calls": _ssm.calls}
