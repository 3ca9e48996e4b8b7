"""The generated files in the repository are what `make manifests` would write now."""

from pathlib import Path

from tenant_operator import manifests


def test_generated_files_are_up_to_date() -> None:
    stale = manifests.stale_files(manifests.REPO_ROOT, manifests.generated_files())
    assert not stale, f"run `make manifests`: {', '.join(map(str, stale))} differ from the models"


def test_check_mode_reports_drift_and_writes_nothing(tmp_path: Path) -> None:
    assert manifests.main(["--root", str(tmp_path), "--check"]) == 1
    assert not any(tmp_path.iterdir())
    assert manifests.main(["--root", str(tmp_path)]) == 0
    assert manifests.main(["--root", str(tmp_path), "--check"]) == 0
    crd = tmp_path / manifests.CRD_FILE
    crd.write_text(crd.read_text() + "# hand edit\n")
    assert manifests.main(["--root", str(tmp_path), "--check"]) == 1
