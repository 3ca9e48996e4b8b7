"""Shards: two operators with label selectors that exclude each other split the Tenants between them: each
installs exactly its own; a Tenant relabelled into the other shard is that shard's from then on."""

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Kube
from tests.e2e.operator_process import Operator, Tenants, helm_revision, small_tenant, unique, wait_until

pytestmark = pytest.mark.cluster

SHARD_LABEL = "neurallog.io/shard"


def sharded(name: str, shard: str) -> dict[str, Any]:
    tenant = small_tenant(name)
    tenant["metadata"]["labels"] = {SHARD_LABEL: shard}
    return tenant


def shard_operator(kube: Kube, operator: Operator, workdir: Path, shard: str) -> Operator:
    """An operator of one shard, with a Lease of its own (shards do not elect one leader between them)."""
    process = Operator(kube, workdir, operator.account)
    process.extra_settings = {
        "TENANT_OPERATOR_WATCH_LABEL_SELECTOR": f"{SHARD_LABEL}={shard}",
        "TENANT_OPERATOR_LEASE_NAME": f"tenant-operator-shard-{shard}",
    }
    return process


def test_two_shards_split_the_tenants_without_overlap(
    kube: Kube, tenants: Tenants, operator: Operator, tmp_path: Path
) -> None:
    operator.stop()  # the package's operator watches every Tenant: out of the way while the shards act
    shards = {shard: shard_operator(kube, operator, tmp_path / shard, shard) for shard in ("a", "b")}
    run = unique("shard")
    names = {"a": [f"{run}-a1", f"{run}-a2"], "b": [f"{run}-b1"]}
    try:
        for shard, process in shards.items():
            (tmp_path / shard).mkdir()
            process.start()
        tenants.apply(*(sharded(name, shard) for shard, group in names.items() for name in group))
        for group in names.values():
            for name in group:
                tenants.wait_for_phase(name, "Running", timeout=180)
        for shard, process in shards.items():
            upgrades = process.metric("tenant_operator_helm_calls_total", command="upgrade")
            assert upgrades == len(names[shard]), f"shard {shard} ran {upgrades} upgrades"
        for name in (*names["a"], *names["b"]):
            assert helm_revision(kube, name) == 1

        # Moved into shard b: b takes it over from its status (nothing changed, no Helm call), a lets it go.
        moved = names["a"][0]
        kube.kubectl("label", "tenant", moved, f"{SHARD_LABEL}=b", "--overwrite")
        kube.kubectl("annotate", "tenant", moved, "tenants.neurallog.io/reconcile=moved", "--overwrite")
        wait_until(lambda: helm_revision(kube, moved) == 2, what="the forced reconcile by shard b")
        assert shards["b"].metric("tenant_operator_helm_calls_total", command="upgrade") == 2
        assert shards["a"].metric("tenant_operator_helm_calls_total", command="upgrade") == 2
    finally:
        for process in shards.values():
            process.stop()
        operator.start()
