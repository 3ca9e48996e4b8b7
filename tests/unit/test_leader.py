"""Leader election on a Lease, against an in-memory Lease with the API server's optimistic concurrency."""

import copy
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import urllib3

from tenant_operator import leader


class MemoryLease:
    """One Lease as the API server keeps it: a resourceVersion that every write must match."""

    namespace = "system"
    name = "tenant-operator"

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.writes = 0

    def get(self) -> dict[str, Any] | None:
        return copy.deepcopy(self.lease)

    def create(self, spec: dict[str, Any]) -> bool:
        if self.lease is not None:
            return False
        self._store(spec)
        return True

    def replace(self, lease: dict[str, Any], spec: dict[str, Any]) -> bool:
        if self.lease is None or lease["metadata"]["resourceVersion"] != str(self.version):
            return False
        self._store(spec)
        return True

    def _store(self, spec: dict[str, Any]) -> None:
        self.version += 1
        self.writes += 1
        self.lease = {"metadata": {"resourceVersion": str(self.version)}, "spec": dict(spec)}

    def held_by(self, holder: str, renewed: datetime, duration: int = 15) -> None:
        self._store(
            {
                "holderIdentity": holder,
                "leaseDurationSeconds": duration,
                "acquireTime": leader._time(renewed),
                "renewTime": leader._time(renewed),
                "leaseTransitions": 3,
            }
        )


def elector(lease: MemoryLease, me: str) -> leader.Elector:
    fast = leader.Timing(
        lease_seconds=15, renew_seconds=0.01, renew_deadline_seconds=0.05, retry_seconds=0.01
    )
    return leader.Elector(cast(Any, lease), me, fast)


def test_a_free_lease_is_taken() -> None:
    lease = MemoryLease()
    assert elector(lease, "a").try_acquire()
    assert lease.lease is not None and lease.lease["spec"]["holderIdentity"] == "a"
    assert lease.lease["spec"]["leaseTransitions"] == 0


def test_a_lease_renewed_by_another_replica_is_left_to_it() -> None:
    lease = MemoryLease()
    lease.held_by("b", datetime.now(UTC) - timedelta(seconds=5))
    assert not elector(lease, "a").try_acquire()
    assert lease.lease is not None and lease.lease["spec"]["holderIdentity"] == "b"


def test_a_lease_its_holder_stopped_renewing_is_taken_over() -> None:
    lease = MemoryLease()
    lease.held_by("b", datetime.now(UTC) - timedelta(seconds=16))
    assert elector(lease, "a").try_acquire()
    assert lease.lease is not None
    assert lease.lease["spec"]["holderIdentity"] == "a"
    assert lease.lease["spec"]["leaseTransitions"] == 4


def test_renewing_keeps_the_acquire_time() -> None:
    lease = MemoryLease()
    mine = elector(lease, "a")
    assert mine.try_acquire()
    assert lease.lease is not None
    acquired = lease.lease["spec"]["acquireTime"]
    assert mine.try_acquire()
    assert lease.lease["spec"]["acquireTime"] == acquired
    assert lease.writes == 2


def test_of_two_replicas_racing_for_a_free_lease_one_wins() -> None:
    lease = MemoryLease()
    lease.held_by("gone", datetime.now(UTC) - timedelta(minutes=1))
    stale = lease.get()
    assert elector(lease, "a").try_acquire()
    # b read the Lease before a wrote it: its write carries the old resourceVersion and is refused.
    assert stale is not None and not lease.replace(stale, {"holderIdentity": "b"})
    assert not elector(lease, "b").try_acquire()
    assert lease.lease is not None and lease.lease["spec"]["holderIdentity"] == "a"


def test_a_released_lease_is_taken_at_once() -> None:
    lease = MemoryLease()
    first = elector(lease, "a")
    assert first.try_acquire()
    first.release()
    assert lease.lease is not None and "holderIdentity" not in lease.lease["spec"]
    assert elector(lease, "b").try_acquire()


def test_a_holder_that_cannot_renew_gives_up_after_the_deadline() -> None:
    lease = MemoryLease()
    mine = elector(lease, "a")
    assert mine.try_acquire()
    lease.held_by("b", datetime.now(UTC))  # b took it (a's clock or network failed it)
    lost = threading.Event()
    mine.keep(lost.set, threading.Event())
    assert lost.is_set()


def test_a_holder_keeps_the_lease_until_stopped() -> None:
    lease = MemoryLease()
    mine = elector(lease, "a")
    assert mine.try_acquire()
    lost, stop = threading.Event(), threading.Event()
    renewing = threading.Thread(target=mine.keep, args=(lost.set, stop))
    renewing.start()
    assert not lost.wait(0.2)
    stop.set()
    renewing.join(timeout=5)
    assert not lost.is_set() and lease.writes > 3


def test_a_standby_waits_until_the_lease_is_free() -> None:
    lease = MemoryLease()
    lease.held_by("b", datetime.now(UTC))
    stop = threading.Event()
    timer = threading.Timer(0.1, stop.set)
    timer.start()
    assert not elector(lease, "a").acquire(stop)
    timer.join()


class UnreachableLease(MemoryLease):
    """The API server restarting: every request fails with no answer at all, until `back` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.back = threading.Event()

    def get(self) -> dict[str, Any] | None:
        if not self.back.is_set():
            raise urllib3.exceptions.MaxRetryError(
                cast(Any, None), "/leases", reason=ConnectionRefusedError(111)
            )
        return super().get()


def test_a_holder_whose_api_server_is_unreachable_gives_up_after_the_deadline() -> None:
    lease = UnreachableLease()
    lease.back.set()
    mine = elector(lease, "a")
    assert mine.try_acquire()
    lease.back.clear()
    lost = threading.Event()
    mine.keep(lost.set, threading.Event())  # returns (it does not raise) once the deadline passed
    assert lost.is_set()
    mine.release()  # nothing to give up where nothing answers: no error either


def test_a_standby_waits_through_an_unreachable_api_server(caplog: pytest.LogCaptureFixture) -> None:
    lease = UnreachableLease()
    timer = threading.Timer(0.05, lease.back.set)
    timer.start()
    with caplog.at_level(logging.INFO, logger=leader.__name__):
        assert elector(lease, "a").acquire(threading.Event())
    timer.join()
    assert lease.lease is not None and lease.lease["spec"]["holderIdentity"] == "a"
    said = caplog.text
    assert "could not read or write the Lease" in said
    assert "another replica holds the Lease" not in said, "no replica held it: nothing answered"
