"""`kit cdc ...` end to end on files: enable, snapshot, run, status, verify, dlq."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from kit.commands.cdc import cli
from kitcore.db import make_engine
from tests.unit.cdc.synthetic import insert_product, make_source, make_target, write_mapping


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    src = make_source(tmp_path / "src.db")
    for i in range(1, 31):
        insert_product(src, i)
    src.dispose()
    make_target(tmp_path / "tgt.db").dispose()
    write_mapping(tmp_path / "m.toml")
    return {
        "CDC_SOURCE_URL": f"sqlite:///{tmp_path / 'src.db'}",
        "CDC_TARGET_URL": f"sqlite:///{tmp_path / 'tgt.db'}",
        "CDC_MAPPING": str(tmp_path / "m.toml"),
        "CDC_LOG_DIR": str(tmp_path / "log"),
    }


def _run(env: dict[str, str], *args: str):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_every_command_has_help() -> None:
    for args in (
        ["--help"],
        ["enable", "--help"],
        ["disable", "--help"],
        ["snapshot", "--help"],
        ["run", "--help"],
        ["status", "--help"],
        ["verify", "--help"],
        ["dlq", "--help"],
        ["dlq", "list", "--help"],
        ["dlq", "retry", "--help"],
        ["dlq", "drop", "--help"],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0 and "Usage" in result.output


def test_full_cycle_from_enable_to_a_clean_verify(env: dict[str, str]) -> None:
    assert "products" in _run(env, "enable", "products", "customers").output
    snap = _run(env, "snapshot", "--chunk", "7")
    assert snap.exit_code == 0 and "done" in snap.output
    before = _run(env, "verify")
    assert before.exit_code == 1 and "missing in catalog_product: id=1" in before.output
    ran = _run(env, "run", "--exit-when-idle")
    assert ran.exit_code == 0 and "stopped cleanly" in ran.output
    status = _run(env, "status")
    assert status.exit_code == 0
    line = next(ln for ln in status.output.splitlines() if ln.startswith("products"))
    assert line.split()[5:8] == ["30", "30", "0"]  # published, applied, lag
    after = _run(env, "verify", "shopfront")
    assert after.exit_code == 0 and "match" in after.output
    assert _run(env, "verify", "other").exit_code == 2


def test_verify_names_differing_rows_and_exits_non_zero(
    env: dict[str, str], tmp_path: Path
) -> None:
    _run(env, "enable", "products", "customers")
    _run(env, "snapshot")
    _run(env, "run", "--exit-when-idle")

    tgt = make_engine(env["CDC_TARGET_URL"])
    with tgt.begin() as conn:
        conn.execute(text("UPDATE catalog_product SET title = 'tampered' WHERE id = 5"))
        conn.execute(text("DELETE FROM catalog_product WHERE id = 6"))
        conn.execute(
            text("INSERT INTO catalog_product VALUES (99, 'x', 'x', 'x', 1, 'EUR', 1, NULL)")
        )
    tgt.dispose()
    out = _run(env, "verify")
    assert out.exit_code == 1
    assert "differs in catalog_product: id=5 columns title" in out.output
    assert "missing in catalog_product: id=6" in out.output
    assert "extra in catalog_product: id=99" in out.output


def test_dlq_commands_list_retry_and_drop(env: dict[str, str]) -> None:
    from cdc.ports import OutgoingMessage
    from cdc.transport.embedded import EmbeddedLog, EmbeddedLogConfig

    _run(env, "enable", "products", "customers")
    prod = EmbeddedLog(EmbeddedLogConfig(env["CDC_LOG_DIR"])).producer()
    prod.send_batch([OutgoingMessage("monolith.main.products", b'{"id":1}', b"oops")])
    prod.close()
    _run(env, "run", "--no-capture", "--exit-when-idle")
    listed = _run(env, "dlq", "list")
    assert "undecodable event" in listed.output
    assert _run(env, "status").exit_code == 2  # dead letters are a problem worth an exit code
    retried = _run(env, "dlq", "retry")
    assert retried.exit_code == 1 and "0 applied, 1 still failing" in retried.output
    assert _run(env, "dlq", "drop").exit_code == 2  # nothing named
    assert "dropped 1" in _run(env, "dlq", "drop", "--all").output


def test_clear_errors_for_missing_configuration(tmp_path: Path) -> None:
    no_manifest = {"CDC_MAPPING": "", "KIT_MANIFEST": str(tmp_path / "kit.toml")}
    result = CliRunner().invoke(cli, ["verify"], env=no_manifest)
    assert result.exit_code == 2 and "--mapping" in result.output
    result = CliRunner().invoke(cli, ["--mapping", str(tmp_path / "none.toml"), "status"])
    assert result.exit_code == 1 and "does not exist" in result.output
    bad = CliRunner().invoke(cli, ["enable", "nope", "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert bad.exit_code == 1 and "'nope'" in bad.output


def test_status_names_a_table_whose_capture_drifted_until_the_worker_repairs_it(
    env: dict[str, str],
) -> None:
    _run(env, "enable", "products", "customers")
    src = make_engine(env["CDC_SOURCE_URL"])
    with src.begin() as conn:  # an Alembic revision that forgot install_capture
        conn.exec_driver_sql("ALTER TABLE products ADD COLUMN weight_g INTEGER")
    src.dispose()
    status = _run(env, "status")
    assert "capture drift on products: column added: products.weight_g" in status.output
    assert _run(env, "run", "--exit-when-idle").exit_code == 0
    assert "capture drift" not in _run(env, "status").output
