"""Pod watcher (leaky): consumes Kubernetes pod watch events and reports crash-looping pods.

It caches the full pod object for every live pod and keeps every finished pod's object "for the
job report", so each batch adds several KB per pod to the warm environment. `fixed.py` keeps a
bounded cache of the five fields it uses. See examples/README.md.
"""

from __future__ import annotations

from k8s_events import sample_event
from lambda_memory_profiler import memory_profile

RESTART_ALERT = 3

# LEAK (cache of full objects): uid -> the whole pod object (managedFields, env, annotations...).
_pods: dict[str, dict] = {}
# LEAK (finished pods never evicted): uid -> the whole final pod object, kept forever.
_finished: dict[str, dict] = {}
_invocations = 0


@memory_profile
def handler(event: dict, context: object) -> dict:
    global _invocations
    _invocations += 1
    if "detail" not in event:
        event = sample_event(event.get("seq", _invocations))
    alerts = []
    for change in event["detail"]["events"]:
        obj = change["object"]
        uid = obj["metadata"]["uid"]
        if change["type"] == "DELETED":
            _pods.pop(uid, None)
            _finished[uid] = obj
            continue
        previous = _pods.get(uid)
        _pods[uid] = obj
        restarts = obj["status"]["containerStatuses"][0]["restartCount"]
        before = previous["status"]["containerStatuses"][0]["restartCount"] if previous else 0
        if restarts >= RESTART_ALERT and restarts > before:
            alerts.append(f"{obj['metadata']['namespace']}/{obj['metadata']['name']}")
    return {"tracked": len(_pods), "finished": len(_finished), "alerts": alerts}
