"""A Tenant's health as GitOps tools compute it (kstatus, tests/kstatus.py) while the real operator runs it:
InProgress from creation until it runs, then Current; InProgress again while a new generation is not
reconciled; Failed when its install is refused, its pods cannot start or its namespace is someone else's;
Terminating once deleted. `kubectl wait` reads the same conditions (and their observedGeneration)."""

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import Kube
from tests.e2e.operator_process import Operator, Tenants, small_tenant, unique
from tests.kstatus import kstatus_result

pytestmark = pytest.mark.cluster

Seen = tuple[str, str, str]  # (phase, kstatus's verdict, kstatus's message)


def conditions(obj: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in obj.get("status", {}).get("conditions", [])}


def kubectl_wait(
    kube: Kube, name: str, condition: str, timeout: str = "10s"
) -> "subprocess.CompletedProcess[str]":
    return kube.kubectl(
        "wait", f"--for=condition={condition}", f"tenant/{name}", f"--timeout={timeout}", check=False
    )


class Watch:
    """Every version of one Tenant that the API server stores, from before it is created (a watch of the
    API, through `kubectl get --raw`): each status the operator writes is judged by kstatus, none is missed
    between two polls."""

    def __init__(self, kube: Kube, name: str) -> None:
        self.name = name
        tenants = f"/apis/neurallog.io/v1/tenants?fieldSelector=metadata.name%3D{name}"
        # From the resource version of now: no change is missed while the watch connects.
        listed = json.loads(kube.kubectl("get", "--raw", tenants).stdout)
        path = f"{tenants}&watch=true&resourceVersion={listed['metadata']['resourceVersion']}"
        self.process = subprocess.Popen(
            [str(kube.bin / "kubectl"), "get", "--raw", path],
            env=kube.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.started = time.monotonic()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                self.events.put(json.loads(line))

    def until(
        self, done: str, *, generation: int | None = None, deleted: bool = False, timeout: float = 180
    ) -> tuple[dict[str, Any], list[Seen]]:
        """Versions until kstatus says `done` of one (NotFound: until the Tenant is gone): that one, and
        (phase, verdict, message) of each version with a status on the way. Versions of another generation
        than `generation` (when given), or not being deleted (`deleted`), are passed over, as are versions
        without a status (none since the CRD defaults it: a version before the operator's first report has
        phase ""). The changes are printed (-s)."""
        seen: list[Seen] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no kstatus {done} for tenant {self.name} in {timeout}s: {seen}"
                ) from None
            assert event["type"] in ("ADDED", "MODIFIED", "DELETED"), event
            obj = event["object"]
            metadata = obj["metadata"]
            if (
                not obj.get("status")
                or generation not in (None, metadata["generation"])
                or (deleted and "deletionTimestamp" not in metadata)
            ):
                continue
            verdict = kstatus_result(obj)
            now = (obj["status"].get("phase", ""), verdict["status"], verdict["message"])
            if not seen or seen[-1] != now:
                elapsed = time.monotonic() - self.started
                print(f"{self.name} +{elapsed:5.1f}s {now[0]:<12} {now[1]:<11} {now[2][:90]}")
            seen.append(now)
            if event["type"] == "DELETED":
                if done == "NotFound":
                    return obj, seen
                raise AssertionError(f"tenant {self.name} was deleted before kstatus said {done}: {seen}")
            if verdict["status"] == done:
                return obj, seen

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def watch(kube: Kube) -> Iterator[Callable[[str], Watch]]:
    """watch(name): a Watch of Tenant `name`, started now, stopped when the test ends."""
    watches: list[Watch] = []

    def start(name: str) -> Watch:
        watches.append(Watch(kube, name))
        return watches[-1]

    yield start
    for started in watches:
        started.close()


def from_conditions(seen: list[Seen]) -> list[Seen]:
    """The verdicts that kstatus took from the conditions, not from a generation the status had not caught
    up with yet (kstatus's first rule, which needs no conditions)."""
    return [entry for entry in seen if not entry[2].startswith("Tenant generation is")]


def test_in_progress_until_running_then_current(
    kube: Kube, tenants: Tenants, operator: Operator, watch: Callable[[str], Watch]
) -> None:
    name = unique("kstatus")
    versions = watch(name)
    tenants.apply(small_tenant(name))
    obj, seen = versions.until("Current")
    assert obj["status"]["phase"] == "Running"
    assert conditions(obj)["Ready"] == ("True", "AllWorkloadsReady")
    assert conditions(obj)["Reconciling"] == ("False", "Reconciled")
    assert conditions(obj)["Stalled"] == ("False", "AsExpected")
    before = seen[:-1]
    # "" is the CRD's default status (observedGeneration 0), before the operator's first report, which says
    # Provisioning once the namespace is made (Pending only while it cannot be).
    assert {phase for phase, _, _ in before} - {""} == {"Provisioning"}, before
    assert {verdict for _, verdict, _ in before} == {"InProgress"}, before
    # Not only kstatus's generation rule: the operator's Reconciling condition says InProgress too.
    assert any(phase == "Provisioning" for phase, _, _ in from_conditions(before)), before
    for condition in ("Ready", "Reconciling=false", "Stalled=false"):
        waited = kubectl_wait(kube, name, condition)
        assert waited.returncode == 0, (condition, waited.stderr)

    # Drift put back in place, the generation unchanged: Ready stays True, Reconciling True makes InProgress.
    generation = obj["metadata"]["generation"]
    kube.kubectl("delete", "networkpolicy", "default-deny", "-n", f"tenant-{name}")
    obj, seen = versions.until("InProgress", generation=generation)
    assert {verdict for _, verdict, _ in seen[:-1]} <= {"Current"}, seen
    assert conditions(obj)["Ready"][0] == "True"
    assert conditions(obj)["Reconciling"] == ("True", "DriftDetected")
    assert conditions(obj)["Drifted"] == ("True", "DriftDetected")
    assert obj["status"]["observedGeneration"] == generation
    obj, seen = versions.until("Current", generation=generation)
    assert {verdict for _, verdict, _ in seen[:-1]} <= {"InProgress"}, seen
    assert conditions(obj)["Drifted"] == ("False", "InSync")
    assert conditions(obj)["Reconciling"] == ("False", "Reconciled")

    # A new generation that the operator has not seen (it is stopped): InProgress, and Ready does not count.
    revision = obj["status"]["release"]["revision"]
    operator.stop()
    try:
        kube.kubectl("patch", "tenant", name, "--type=merge", "-p", '{"spec":{"description":"changed"}}')
        changed, seen = versions.until("InProgress", generation=generation + 1, timeout=30)
        assert changed["status"]["observedGeneration"] == generation
        assert conditions(changed)["Ready"][0] == "True", "the workloads still run"
        assert seen[-1][2] == (
            f"Tenant generation is {generation + 1}, but latest observed generation is {generation}"
        )
        waited = kubectl_wait(kube, name, "Ready", timeout="3s")
        assert waited.returncode != 0, "kubectl wait took a Ready of the previous generation"
    finally:
        operator.start()
    obj, seen = versions.until("Current", generation=generation + 1)
    assert {verdict for _, verdict, _ in seen[:-1]} == {"InProgress"}, seen
    assert obj["status"]["observedGeneration"] == generation + 1
    assert all(c["observedGeneration"] == generation + 1 for c in obj["status"]["conditions"])
    assert obj["status"]["release"]["revision"] == revision + 1, "the description is a value of the release"
    waited = kubectl_wait(kube, name, "Ready")
    assert waited.returncode == 0, waited.stderr

    # Deleted: Terminating until it is gone.
    tenants.delete(name, wait=False)
    _, seen = versions.until("NotFound", deleted=True)
    assert {verdict for _, verdict, _ in seen} == {"Terminating"}, seen


def test_a_refused_install_is_failed_until_fixed(
    kube: Kube, tenants: Tenants, watch: Callable[[str], Watch]
) -> None:
    name = unique("kstatus-budget")
    versions = watch(name)
    broken = small_tenant(name, resources={"cpu": {"limit": "300m", "request": "30m"}})
    tenants.apply(broken)
    obj, seen = versions.until("Failed")
    assert obj["status"]["phase"] == "Failed"
    assert {verdict for _, verdict, _ in seen[:-1]} == {"InProgress"}, seen
    stalled = next(c for c in obj["status"]["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert stalled["reason"] == obj["status"]["release"]["reason"] != ""
    assert stalled["message"] == obj["status"]["release"]["message"]
    assert "cpu" in stalled["message"].lower(), stalled
    assert seen[-1][2] == stalled["message"], "kstatus repeats the failure"
    assert conditions(obj)["Reconciling"][0] == "False"
    assert conditions(obj)["Ready"][0] == "False"
    assert kubectl_wait(kube, name, "Stalled").returncode == 0
    assert kubectl_wait(kube, name, "Ready", timeout="3s").returncode != 0

    broken["spec"]["resources"] = {"cpu": {"limit": "2", "request": "1"}}
    tenants.apply(broken)
    obj, seen = versions.until("Current", generation=obj["metadata"]["generation"] + 1)
    assert obj["status"]["phase"] == "Running"
    assert {verdict for _, verdict, _ in seen[:-1]} == {"InProgress"}, (
        f"the fixed tenant failed again: {seen}"
    )


def test_pods_that_cannot_start_are_failed(tenants: Tenants, watch: Callable[[str], Watch]) -> None:
    name = unique("kstatus-image")
    versions = watch(name)
    tenants.apply(small_tenant(name, server={"image": "neurallog/server:unpullable"}))
    obj, seen = versions.until("Failed")
    assert obj["status"]["phase"] == "Degraded"
    assert conditions(obj)["Stalled"] == ("True", "WorkloadsDegraded")
    assert conditions(obj)["Reconciling"][0] == "False"
    assert "neurallog/server:unpullable" in seen[-1][2]
    assert {verdict for _, verdict, _ in seen[:-1]} == {"InProgress"}, seen


@pytest.fixture
def foreign_namespace(kube: Kube) -> Iterator[str]:
    """A namespace `tenant-<name>` that someone else made before the Tenant."""
    name = unique("kstatus-foreign")
    kube.kubectl("create", "namespace", f"tenant-{name}")
    yield name
    kube.kubectl("delete", "namespace", f"tenant-{name}", "--ignore-not-found", "--wait=false")


def test_a_namespace_that_waits_for_an_administrator_is_failed(
    tenants: Tenants, foreign_namespace: str, watch: Callable[[str], Watch]
) -> None:
    name = foreign_namespace
    versions = watch(name)
    tenants.apply(small_tenant(name))
    obj, seen = versions.until("Failed")
    assert obj["status"]["phase"] == "Pending"
    assert conditions(obj)["Stalled"] == ("True", "NamespaceNotOwned")
    assert conditions(obj)["Reconciling"][0] == "False"
    assert "neurallog.io/adopt" in seen[-1][2]


def test_a_tenant_no_operator_has_seen_is_in_progress(kube: Kube, crd: None) -> None:
    """Before any operator writes its status, the CRD's default (observedGeneration 0) already tells GitOps
    tools that generation 1 is not reconciled: InProgress, not the Current that no status would read."""
    tenant = small_tenant(unique("unseen"))
    created = kube.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(tenant))
    obj = json.loads(created.stdout)
    assert obj["status"] == {"observedGeneration": 0}
    verdict = kstatus_result(obj)
    assert verdict["status"] == "InProgress", verdict
    without = {key: value for key, value in obj.items() if key != "status"}
    assert kstatus_result(without)["status"] == "Current", "the trap the default closes"
