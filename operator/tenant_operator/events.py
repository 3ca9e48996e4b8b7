"""Kubernetes events on a Tenant, the story that `kubectl describe tenant` tells."""

from collections.abc import Mapping
from typing import Any, Literal, cast

import kopf

MAX_EVENT_MESSAGE = 1024


def post(tenant: Mapping[str, Any], kind: Literal["Normal", "Warning"], reason: str, message: str) -> None:
    """Post an event about `tenant` (any body with apiVersion, kind and metadata.name/uid)."""
    metadata = tenant["metadata"]
    reference = {
        "apiVersion": tenant.get("apiVersion", "neurallog.io/v1"),
        "kind": tenant.get("kind", "Tenant"),
        "metadata": {"name": metadata["name"], "uid": metadata.get("uid")},
    }
    if len(message) > MAX_EVENT_MESSAGE:
        message = message[: MAX_EVENT_MESSAGE - 3] + "..."
    kopf.event(cast(kopf.Body, reference), type=kind, reason=reason, message=message)
