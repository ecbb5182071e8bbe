"""Simulated Kubernetes pod watch stream, delivered in batches (EventBridge or SQS style).

Job pods churn: every batch adds new pods, updates recent ones and deletes older ones. Pod objects
carry what the API server really sends (managedFields, last-applied annotation, env, status), so a
full object is several KB while the consumer needs a handful of fields.
"""

from __future__ import annotations

import json
import random
import uuid

NAMESPACES = ("payments", "checkout", "batch-jobs", "search")
NODES = tuple(f"ip-10-0-{n}-{n * 7 % 255}.ec2.internal" for n in range(12))
PODS_PER_BATCH = 8


def _uid(n: int) -> str:
    return str(uuid.UUID(int=random.Random(n).getrandbits(128)))


def pod(n: int, version: int, phase: str, restarts: int) -> dict:
    rng = random.Random(n)
    namespace = rng.choice(NAMESPACES)
    name = f"report-{n:06d}-{rng.getrandbits(20):05x}"
    env = [{"name": f"SETTING_{k}", "value": f"{rng.getrandbits(64):016x}"} for k in range(25)]
    container = {
        "name": "worker",
        "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/report-worker:1.42.0",
        "env": env,
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
    }
    spec = {"containers": [container], "nodeName": rng.choice(NODES), "restartPolicy": "OnFailure"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": _uid(n),
            "resourceVersion": str(1_000_000 + n * 10 + version),
            "labels": {"app": "report-worker", "job-name": f"report-{n:06d}", "team": namespace},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": json.dumps({"spec": spec}),
            },
            "managedFields": [
                {
                    "manager": manager,
                    "operation": "Update",
                    "apiVersion": "v1",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {f"f:{key}": {} for key in ("metadata", "spec", "status")},
                }
                for manager in ("kube-controller-manager", "kubelet", "kube-scheduler")
            ],
        },
        "spec": spec,
        "status": {
            "phase": phase,
            "hostIP": f"10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": "2026-11-24T07:00:00Z"}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "containerStatuses": [
                {"name": "worker", "ready": phase == "Running", "restartCount": restarts}
            ],
        },
    }


def sample_event(seq: int) -> dict:
    """Batch `seq`: ADDED for its pods, MODIFIED for the last batch's, DELETED for older ones."""
    events = []
    for k in range(PODS_PER_BATCH):
        n = seq * PODS_PER_BATCH + k
        events.append({"type": "ADDED", "object": pod(n, 0, "Pending", 0)})
        if seq >= 1:
            old = n - PODS_PER_BATCH
            restarts = old % 5
            events.append({"type": "MODIFIED", "object": pod(old, 1, "Running", restarts)})
        if seq >= 2:
            gone = n - 2 * PODS_PER_BATCH
            events.append({"type": "DELETED", "object": pod(gone, 2, "Succeeded", gone % 5)})
    return {"source": "k8s.watch", "detail": {"cluster": "prod-eu-1", "events": events}}
