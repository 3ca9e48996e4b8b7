"""A small dynamic volume provisioner for the local cluster.

For each PersistentVolumeClaim of our StorageClass it creates a PersistentVolume backed by a directory under
the cluster's state, pre-bound to the claim (the PV controller of kube-controller-manager completes the
binding). A released volume of ours is deleted together with its directory, as the Delete reclaim policy says.
The pods of KWOK nodes never mount anything: the directory only makes the volume's life visible.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("volume-provisioner")
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"


def volume_for_claim(claim: Any, provisioner: str, volumes: Path) -> dict[str, Any]:
    """The PersistentVolume that satisfies ``claim``, bound to it."""
    name = f"pvc-{claim.metadata.uid}"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: provisioner}},
        "spec": {
            "capacity": {"storage": claim.spec.resources.requests["storage"]},
            "accessModes": claim.spec.access_modes,
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": claim.spec.storage_class_name,
            "volumeMode": claim.spec.volume_mode or "Filesystem",
            "hostPath": {"path": str(volumes / name), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": claim.metadata.namespace,
                "name": claim.metadata.name,
                "uid": claim.metadata.uid,
            },
        },
    }


class Provisioner:
    def __init__(self, provisioner: str, volumes: Path) -> None:
        self.provisioner = provisioner
        self.volumes = volumes
        self.core = client.CoreV1Api()
        self.storage = client.StorageV1Api()

    def _ours(self, storage_class_name: str | None) -> bool:
        if not storage_class_name:
            return False
        try:
            storage_class = self.storage.read_storage_class(storage_class_name)
        except ApiException:
            return False
        return bool(storage_class.provisioner == self.provisioner)

    def on_claim(self, claim: Any) -> None:
        if claim.spec.volume_name or claim.status.phase != "Pending" or claim.metadata.deletion_timestamp:
            return
        if not self._ours(claim.spec.storage_class_name):
            return
        volume = volume_for_claim(claim, self.provisioner, self.volumes)
        directory = self.volumes / volume["metadata"]["name"]
        directory.mkdir(parents=True, exist_ok=True)
        # Pods write as whatever non-root user they run as (Redis: 999), and a hostPath volume is not chowned
        # for their fsGroup: the directory is open to all, as local-path provisioners make theirs.
        directory.chmod(0o777)
        try:
            self.core.create_persistent_volume(volume)  # type: ignore[arg-type]  # a dict is a valid body
            log.info("provisioned %s for %s/%s", volume["metadata"]["name"], claim.metadata.namespace,
                     claim.metadata.name)  # fmt: skip
        except ApiException as error:
            if error.status != 409:  # already provisioned: a repeated event
                raise

    def on_volume(self, volume: Any) -> None:
        annotations = volume.metadata.annotations or {}
        if annotations.get(PROVISIONED_BY) != self.provisioner or volume.status.phase != "Released":
            return
        shutil.rmtree(self.volumes / volume.metadata.name, ignore_errors=True)
        try:
            self.core.delete_persistent_volume(volume.metadata.name)
            log.info("deleted released volume %s", volume.metadata.name)
        except ApiException as error:
            if error.status != 404:
                raise


def _follow(list_call: Callable[..., Any], handler: Callable[[Any], None]) -> None:
    """Lists, then watches, for ever; every object seen goes to ``handler``."""
    while True:
        try:
            for event in watch.Watch().stream(list_call, timeout_seconds=60):
                if event["type"] in ("ADDED", "MODIFIED"):
                    handler(event["object"])
        except Exception:  # the API server restarted or a watch expired: start over
            log.exception("watch failed; restarting")
            time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--volumes", required=True, type=Path)
    parser.add_argument("--provisioner", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config.load_kube_config(config_file=args.kubeconfig)
    provisioner = Provisioner(args.provisioner, args.volumes)
    volumes = threading.Thread(
        target=_follow, args=(provisioner.core.list_persistent_volume, provisioner.on_volume), daemon=True
    )
    volumes.start()
    _follow(provisioner.core.list_persistent_volume_claim_for_all_namespaces, provisioner.on_claim)


if __name__ == "__main__":
    main()
