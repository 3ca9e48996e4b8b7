"""The generated files in the repository are what `make manifests` would write now."""

from pathlib import Path

import pytest
import yaml

from tenant_operator import manifests


def test_crd_and_values_schema_are_up_to_date() -> None:
    stale = manifests.stale_files(manifests.REPO_ROOT, manifests.generated_files())
    assert not stale, f"run `make manifests`: {', '.join(map(str, stale))} differ from the models"


def test_operator_config_is_up_to_date() -> None:
    helm = manifests.find_helm(manifests.REPO_ROOT)
    if helm is None:
        pytest.skip("no helm to render charts/tenant-operator (make binaries)")
    stale = manifests.stale_files(manifests.REPO_ROOT, manifests.generated_files(helm))
    assert not stale, f"run `make manifests`: {', '.join(map(str, stale))} differ from the operator chart"


def test_check_mode_reports_drift_and_writes_nothing(tmp_path: Path) -> None:
    check = ["--root", str(tmp_path), "--without-helm", "--check"]
    assert manifests.main(check) == 1
    assert not any(tmp_path.iterdir())
    assert manifests.main(["--root", str(tmp_path), "--without-helm"]) == 0
    assert manifests.main(check) == 0
    crd = tmp_path / manifests.CRD_FILE
    crd.write_text(crd.read_text() + "# hand edit\n")
    assert manifests.main(check) == 1


def test_operator_config_groups_the_chart_by_kind_namespace_first() -> None:
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "op", "namespace": "system"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "controller-manager"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "op"}},
    ]
    files = manifests.config_files(objects)
    rbac = sorted(path.name for path in files if path.parent.name == "rbac")
    assert rbac[0] == "namespace.yaml", "kubectl apply -f <dir> goes in name order: the namespace first"
    assert yaml.safe_load(files[manifests.CONFIG / "rbac" / "namespace.yaml"])["metadata"]["name"] == "system"
    assert [doc["kind"] for doc in yaml.safe_load_all(files[manifests.MANAGER_FILE])] == ["Deployment"]
    crd = yaml.safe_load(files[manifests.CONFIG_CRD_FILE])
    assert crd["metadata"]["name"] == "tenants.neurallog.io"


def test_leftover_config_files_are_stale_and_removed(tmp_path: Path) -> None:
    files = manifests.config_files([])
    manifests.write_files(tmp_path, files)
    leftover = tmp_path / manifests.CONFIG / "rbac" / "old.yaml"
    leftover.write_text("kind: Old\n")
    assert manifests.stale_files(tmp_path, files) == [leftover.relative_to(tmp_path)]
    manifests.write_files(tmp_path, files)
    assert not leftover.exists()
