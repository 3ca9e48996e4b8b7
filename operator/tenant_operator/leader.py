"""Leader election on a coordination.k8s.io Lease: of several operator replicas, only the holder acts.

The rules are client-go's: a replica takes the Lease when it is free or its holder has not renewed it for
`lease_seconds`; the holder renews it every `renew_seconds`; a holder that cannot renew for
`renew_deadline_seconds` stops at once (the process exits and its pod restarts as a standby), so two replicas
never act at the same time for longer than the clock skew between them. A holder that stops cleanly gives the
Lease up, and a standby takes over within `retry_seconds`. Writes use the Lease's resourceVersion, so two
standbys racing for a free Lease cannot both win.
"""

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from tenant_operator.kube import GET, POST, PUT, Rest, path

logger = logging.getLogger(__name__)

Lease = dict[str, Any]
LEASES = "/apis/coordination.k8s.io/v1"


@dataclass(frozen=True)
class Timing:
    lease_seconds: float = 15
    renew_seconds: float = 5
    renew_deadline_seconds: float = 10
    retry_seconds: float = 2


def identity() -> str:
    """This replica: its pod name (the hostname) and a random part, unique across restarts."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _now() -> datetime:
    return datetime.now(UTC)


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.strptime(value.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")


def expired(lease: Lease, now: datetime) -> bool:
    """Whether a Lease is free: no holder, or a holder silent for longer than the Lease's duration."""
    spec = lease.get("spec") or {}
    if not spec.get("holderIdentity"):
        return True
    renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
    duration = float(spec.get("leaseDurationSeconds") or 0)
    return renewed is None or (now - renewed).total_seconds() > duration


class LeaseApi:
    """Reads and writes one Lease, as plain JSON (camelCase, times as strings), with kube.Rest
    (synchronous: the election runs in a thread of its own)."""

    def __init__(self, rest: Rest, namespace: str, name: str) -> None:
        self.rest = rest
        self.namespace = namespace
        self.name = name
        self.leases = path(LEASES, "namespaces", namespace, "leases")

    def get(self) -> Lease | None:
        try:
            response = self.rest(GET, path(self.leases, self.name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        lease: Lease = json.loads(response.data)
        return lease

    def create(self, spec: dict[str, Any]) -> bool:
        body = {"metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
        try:
            self.rest(POST, self.leases, body=body).read()
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def replace(self, lease: Lease, spec: dict[str, Any]) -> bool:
        """Write the spec over the Lease as it was read; False when someone wrote it meanwhile."""
        metadata = {"name": self.name, "resourceVersion": lease["metadata"]["resourceVersion"]}
        body = {"metadata": metadata, "spec": spec}
        try:
            self.rest(PUT, path(self.leases, self.name), body=body).read()
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True


# A Lease that could not be read or written: an error answer, or no answer (the API server restarting, a
# connection refused or cut). Renewal counts either as a failure; its thread must not end on one, or the
# replica would go on acting with a Lease that expires under it while a standby takes it.
UNREACHABLE = (ApiException, urllib3.exceptions.HTTPError, OSError)


def reason(error: Exception) -> str:
    return str(error.reason) if isinstance(error, ApiException) else f"{type(error).__name__}: {error}"


class Elector:
    """One replica's part in the election."""

    def __init__(self, api: LeaseApi, me: str, timing: Timing = Timing()) -> None:
        self.api = api
        self.me = me
        self.timing = timing

    def try_acquire(self) -> bool:
        """One attempt to take the Lease, or to renew it when this replica holds it."""
        now = _now()
        lease = self.api.get()
        spec = (lease or {}).get("spec") or {}
        mine = spec.get("holderIdentity") == self.me
        if lease is not None and not mine and not expired(lease, now):
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        wanted = {
            "holderIdentity": self.me,
            "leaseDurationSeconds": int(self.timing.lease_seconds),
            "acquireTime": spec["acquireTime"] if mine and spec.get("acquireTime") else _time(now),
            "renewTime": _time(now),
            "leaseTransitions": transitions if mine or lease is None else transitions + 1,
        }
        return self.api.create(wanted) if lease is None else self.api.replace(lease, wanted)

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait until this replica holds the Lease; False when `stop` was set first."""
        standing_by = False
        while not (stop and stop.is_set()):
            try:
                if self.try_acquire():
                    logger.info(
                        "leader election: %s holds Lease %s/%s", self.me, self.api.namespace, self.api.name
                    )
                    return True
                if not standing_by:
                    logger.info("leader election: another replica holds the Lease; standing by")
                    standing_by = True
            except UNREACHABLE as error:
                logger.warning("leader election: could not read or write the Lease: %s", reason(error))
            time.sleep(self.timing.retry_seconds)
        return False

    def keep(self, lost: Callable[[], None], stop: threading.Event) -> None:
        """Renew the Lease until `stop` is set; call `lost` once renewing failed for the renew deadline."""
        last_renewed = time.monotonic()
        while not stop.wait(self.timing.renew_seconds):
            try:
                if self.try_acquire():
                    last_renewed = time.monotonic()
                    continue
                logger.error("leader election: another replica took the Lease")
            except UNREACHABLE as error:
                logger.warning("leader election: could not renew the Lease: %s", reason(error))
            if time.monotonic() - last_renewed > self.timing.renew_deadline_seconds:
                lost()
                return

    def release(self) -> None:
        """Give the Lease up (a clean stop), so that a standby takes over at once; where the API server
        cannot be reached, the Lease expires instead."""
        try:
            lease = self.api.get()
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.me:
                return
            free = {"leaseDurationSeconds": 1, "leaseTransitions": int(spec.get("leaseTransitions") or 0)}
            if self.api.replace(lease, free):
                logger.info("leader election: gave the Lease up")
        except UNREACHABLE as error:
            logger.warning("leader election: could not give the Lease up (it expires): %s", reason(error))


class StandbyHealth:
    """/healthz answered while the replica stands by (Kopf serves it only once it runs)."""

    def __init__(self, port: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/healthz" else 404)
                self.end_headers()
                self.wfile.write(b"standby\n")

            def log_message(self, format: str, *args: Any) -> None:
                return

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="standby-health", daemon=True)

    def __enter__(self) -> "StandbyHealth":
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def exit_now() -> None:
    """Leadership lost: stop acting at once. The pod restarts as a standby; Helm calls in flight die with the
    container (a release they leave pending is rolled back by the next leader)."""
    logger.critical("leader election: lost the Lease; exiting so that only the new leader acts")
    logging.shutdown()
    os._exit(1)
