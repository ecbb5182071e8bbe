"""Simulated AWS Systems Manager Parameter Store: answers `get_parameter` like boto3 does.

Values are deterministic per name (a tenant's JSON configuration, a few KB), and every response
carries the metadata boto3 returns, which is what a cache of whole responses ends up holding.
"""

from __future__ import annotations

import datetime
import json
import random
import uuid

REGION = "us-east-1"
ACCOUNT = "123456789012"
TENANTS = 50_000


class ParameterNotFound(Exception):
    pass


class SimulatedParameterStore:
    """Stands in for `boto3.client("ssm")`; counts calls so callers can show their hit rate."""

    def __init__(self) -> None:
        self.calls = 0

    def get_parameter(self, Name: str, WithDecryption: bool = False) -> dict:  # noqa: N803
        self.calls += 1
        if not Name.startswith(("/app/", "/tenants/")):
            raise ParameterNotFound(Name)
        rng = random.Random(Name)
        config = {
            "feature_flags": {f"flag_{n}": rng.random() < 0.5 for n in range(60)},
            "rate_limits": {f"/api/v{n}": rng.randint(10, 5000) for n in range(30)},
            "webhook_url": f"https://hooks.example.com/{rng.getrandbits(128):032x}",
            "allowed_ips": [
                f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.0/24" for _ in range(20)
            ],
        }
        return {
            "Parameter": {
                "Name": Name,
                "Type": "SecureString" if WithDecryption else "String",
                "Value": json.dumps(config),
                "Version": rng.randint(1, 40),
                "LastModifiedDate": datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc),
                "ARN": f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{Name}",
                "DataType": "text",
            },
            "ResponseMetadata": {
                "RequestId": str(uuid.uuid4()),
                "HTTPStatusCode": 200,
                "HTTPHeaders": {
                    "server": "Server",
                    "date": "Tue, 24 Nov 2026 07:00:00 GMT",
                    "content-type": "application/x-amz-json-1.1",
                    "x-amzn-requestid": str(uuid.uuid4()),
                },
                "RetryAttempts": 0,
            },
        }


def sample_event(seq: int, size: int = 10) -> dict:
    """An SQS batch of webhook jobs for `size` tenants drawn from a large population."""
    rng = random.Random(seq)
    records = []
    for n in range(size):
        tenant = f"t-{rng.randrange(TENANTS):05d}"
        body = {"tenant_id": tenant, "event": "order.created", "order_id": f"{seq}-{n}"}
        records.append(
            {"messageId": str(uuid.UUID(int=rng.getrandbits(128))), "body": json.dumps(body)}
        )
    return {"Records": records}
