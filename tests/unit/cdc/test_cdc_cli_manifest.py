"""`kit cdc <verb> <service>` takes everything from the manifest: no URL, mapping, log or
prefix option, and the same workers, topics and group as the playbook."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kit.cli import main
from kit.manifest import load_manifest
from kit.playbook.pipelines import forward_pipeline
from tests.playbook_shop import seed_monolith, write_manifest

CDC_VARIABLES = [k for k in os.environ if k.startswith("CDC_") or k == "KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = write_manifest(tmp_path)
    m = load_manifest(path)
    seed_monolith(m.monolith.database_url)
    return path


def _kit(manifest: Path, *args: str) -> Result:
    env: dict[str, str | None] = {"KIT_MANIFEST": str(manifest)}
    env.update({k: None for k in CDC_VARIABLES})
    return CliRunner().invoke(main, list(args), env=env)


def test_verify_and_status_of_a_service_need_nothing_but_the_manifest(manifest: Path) -> None:
    assert _kit(manifest, "db", "upgrade", "catalog").exit_code == 0
    enabled = _kit(manifest, "cdc", "--service", "catalog", "enable")
    assert enabled.exit_code == 0, enabled.output
    assert "categories" in enabled.output and "products" in enabled.output
    assert _kit(manifest, "cdc", "-s", "catalog", "snapshot").exit_code == 0
    behind = _kit(manifest, "cdc", "verify", "catalog")
    assert behind.exit_code == 1 and "missing in" in behind.output
    ran = _kit(manifest, "cdc", "run", "catalog", "--exit-when-idle")
    assert ran.exit_code == 0 and "stopped cleanly" in ran.output, ran.output

    verified = _kit(manifest, "cdc", "verify", "catalog")
    assert verified.exit_code == 0, verified.output
    assert "verify: source and target match" in verified.output

    status = _kit(manifest, "cdc", "status", "catalog")
    assert status.exit_code == 0, status.output
    products = next(ln for ln in status.output.splitlines() if ln.startswith("products"))
    pipe = forward_pipeline(load_manifest(manifest), "catalog")
    assert pipe.group in products  # the playbook's group, not a CLI default
    published, applied, lag = products.split()[5:8]
    assert published == applied == "50" and lag == "0"


def test_status_without_a_service_covers_every_service_of_the_manifest(manifest: Path) -> None:
    assert _kit(manifest, "db", "upgrade", "catalog").exit_code == 0
    assert _kit(manifest, "cdc", "-s", "catalog", "enable").exit_code == 0
    assert _kit(manifest, "cdc", "-s", "catalog", "snapshot").exit_code == 0
    status = _kit(manifest, "cdc", "status")
    assert status.exit_code == 0, status.output
    assert "== catalog" in status.output and "== customers" in status.output
    catalog = status.output.split("== customers")[0]
    products = next(ln for ln in catalog.splitlines() if ln.startswith("products"))
    assert products.split()[5] == "50"  # published: the manifest's log, not a default folder


def test_an_option_still_overrides_the_manifest(manifest: Path, tmp_path: Path) -> None:
    other_log = tmp_path / "elsewhere"
    status = _kit(manifest, "cdc", "--log-dir", str(other_log), "status", "catalog")
    assert status.exit_code == 0, status.output
    assert other_log.is_dir()  # the embedded log opened where the option said


def test_an_unknown_service_is_named_with_the_known_ones(manifest: Path) -> None:
    result = _kit(manifest, "cdc", "verify", "billing")
    assert result.exit_code == 1
    assert "unknown service 'billing'" in result.output and "catalog" in result.output
