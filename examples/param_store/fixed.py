"""Parameter-store cache (fixed): bounded LRU cache with a TTL, holding only the fields used."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import NamedTuple

from lambda_memory_profiler import memory_profile
from ssm_stub import SimulatedParameterStore, sample_event

_ssm = SimulatedParameterStore()
_invocations = 0


class Settings(NamedTuple):
    webhook_url: str
    enabled: bool


class TTLCache:
    """Least-recently-used cache of at most `maxsize` entries, each valid for `ttl` seconds."""

    def __init__(self, maxsize: int, ttl: float) -> None:
        self.maxsize = maxsize
        self.ttl = ttl
        self._data: OrderedDict[str, tuple[float, Settings]] = OrderedDict()

    def get(self, key: str, load) -> Settings:
        now = time.monotonic()
        hit = self._data.get(key)
        if hit is not None and hit[0] > now:
            self._data.move_to_end(key)
            return hit[1]
        value = load(key)
        self._data[key] = (now + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)
        return value


# FIX: bounded (hot tenants stay cached, the long tail is re-read), expiring (config changes
# reach warm environments within TTL seconds), and holding the two fields used, not the response.
_cache = TTLCache(maxsize=128, ttl=300.0)


def _load(name: str) -> Settings:
    config = json.loads(_ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
    return Settings(config["webhook_url"], config["feature_flags"].get("flag_0", True))


def get_settings(tenant_id: str) -> Settings:
    return _cache.get(f"/tenants/{tenant_id}/config", _load)


@memory_profile
def handler(event: dict, context: object) -> dict:
    global _invocations
    _invocations += 1
    if "Records" not in event:
        event = sample_event(event.get("seq", _invocations))
    sent = 0
    for record in event["Records"]:
        settings = get_settings(json.loads(record["body"])["tenant_id"])
        if settings.enabled:
            sent += 1  # the HTTP call to settings.webhook_url would go here
    return {"jobs": len(event["Records"]), "sent": sent, "ssm_calls": _ssm.calls}
