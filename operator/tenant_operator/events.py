"""Kubernetes events on a Tenant, the story that `kubectl describe tenant` tells.

Written with the API client rather than kopf's poster: kopf files the events of a cluster-scoped object under
involvedObject.namespace=default, where `kubectl describe` does not look. Here they are what Kubernetes itself
writes for cluster-scoped objects (Nodes): in namespace default, with no namespace in involvedObject. Repeats
of one event are counted on one Event object instead of piling up.
"""

import asyncio
import hashlib
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from tenant_operator.kube import Kube

logger = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]
COMPONENT = "tenant-operator"
EVENT_NAMESPACE = "default"
MAX_EVENT_MESSAGE = 1024
MAX_COUNTED = 10_000


def build_event(
    tenant: Mapping[str, Any], kind: EventType, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """An Event about `tenant`, named after what it says (so that a repeat finds it)."""
    metadata = tenant["metadata"]
    if len(message) > MAX_EVENT_MESSAGE:
        message = message[: MAX_EVENT_MESSAGE - 3] + "..."
    digest = hashlib.sha256(f"{metadata.get('uid')}\0{kind}\0{reason}\0{message}".encode()).hexdigest()[:12]
    timestamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{metadata['name']}.{digest}", "namespace": EVENT_NAMESPACE},
        "involvedObject": {
            "apiVersion": tenant.get("apiVersion", "neurallog.io/v1"),
            "kind": tenant.get("kind", "Tenant"),
            "name": metadata["name"],
            "uid": metadata.get("uid"),
        },
        "type": kind,
        "reason": reason,
        "message": message,
        "count": 1,
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": socket.gethostname()[:128],
    }


@dataclass
class EventRecorder:
    """Posts events in the background: a failed event is logged, never a failed reconciliation."""

    kube: Kube
    _tasks: set["asyncio.Task[None]"] = field(default_factory=set)
    # How often each event was posted by this process: a repeat patches the count, with no read (and no
    # permission to read events).
    _counts: dict[str, int] = field(default_factory=dict)

    def post(self, tenant: Mapping[str, Any], kind: EventType, reason: str, message: str) -> None:
        event = build_event(tenant, kind, reason, message, datetime.now(UTC))
        log = logger.warning if kind == "Warning" else logger.info
        log("tenant %s: %s: %s", tenant["metadata"]["name"], reason, event["message"])
        task = asyncio.get_running_loop().create_task(self._record(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, event: dict[str, Any]) -> None:
        metadata = event["metadata"]
        try:
            if not await self.kube.create_event(event):
                count = self._counts.get(metadata["name"], 1) + 1
                patch = {"count": count, "lastTimestamp": event["lastTimestamp"]}
                await self.kube.patch_event(metadata["namespace"], metadata["name"], patch)
                if len(self._counts) >= MAX_COUNTED:
                    self._counts.clear()
                self._counts[metadata["name"]] = count
        except Exception:
            logger.exception("could not post the event %s", event["reason"])
