"""`kit db <app>` runs the app's OWN Alembic history, and refuses databases it does not own."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from kit.cli import main
from kit.manifest import ManifestError, load_manifest
from kitcore.db import make_engine
from tests.unit.appdb.ownapp import table_names, write_app_manifest


def _kit(manifest: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["db", *args], env={"KIT_MANIFEST": str(manifest)})


def _exec(url: str, *statements: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for s in statements:
                conn.execute(text(s))
    finally:
        engine.dispose()


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return write_app_manifest(tmp_path)


def test_upgrade_current_history_and_downgrade_use_the_apps_own_history(app: Path) -> None:
    url = f"sqlite:///{app.parent / 'var' / 'notes.db'}"
    up = _kit(app, "upgrade", "monolith")
    assert up.exit_code == 0, up.output
    assert "upgraded to n0001_notes" in up.output
    assert table_names(url) == {"notes", "tags", "notes_version"}
    current = _kit(app, "current", "monolith")
    assert "n0001_notes (head: n0001_notes; up to date)" in current.output
    history = _kit(app, "history", "monolith")
    assert history.exit_code == 0 and "n0001_notes  <- (base)" in history.output
    down = _kit(app, "downgrade", "monolith")
    assert down.exit_code == 0 and "(base)" in down.output
    assert table_names(url) == {"notes_version"}


def test_upgrade_refuses_a_database_at_a_revision_of_another_history(app: Path) -> None:
    url = f"sqlite:///{app.parent / 'var' / 'other.db'}"
    _exec(
        url,
        "CREATE TABLE notes_version (version_num VARCHAR(32) PRIMARY KEY)",
        "INSERT INTO notes_version VALUES ('m0001_initial')",
    )
    result = _kit(app, "upgrade", "monolith", "--url", url)
    assert result.exit_code == 1
    assert "'m0001_initial'" in result.output
    assert "notes_migrations" in result.output  # names both sides
    assert table_names(url) == {"notes_version"}


def test_upgrade_refuses_someone_elses_tables_in_a_database_without_a_version_table(
    app: Path,
) -> None:
    url = f"sqlite:///{app.parent / 'var' / 'theirs.db'}"
    _exec(url, "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    result = _kit(app, "upgrade", "monolith", "--url", url)
    assert result.exit_code == 1
    assert "no notes_version table" in result.output and "notes" in result.output
    assert table_names(url) == {"notes"}


def test_an_app_without_alembic_is_refused_and_baseline_stamps_it_without_changing_it(
    tmp_path: Path,
) -> None:
    manifest = write_app_manifest(tmp_path, own_migrations=False)
    url = f"sqlite:///{tmp_path / 'var' / 'notes.db'}"
    _exec(url, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    refused = _kit(manifest, "upgrade", "monolith")
    assert refused.exit_code == 1
    assert "no Alembic environment" in refused.output and "kit db baseline" in refused.output

    done = _kit(manifest, "baseline", "monolith")
    assert done.exit_code == 0, done.output
    assert (tmp_path / "migrations" / "versions" / "0001_baseline.py").is_file()
    text_after = manifest.read_text()
    assert text_after.startswith("# a team's manifest: comments stay")
    assert 'script_location = "migrations"' in text_after
    assert table_names(url) == {"notes", "alembic_version"}
    current = _kit(manifest, "current", "monolith")
    assert "0001_baseline (head: 0001_baseline; up to date)" in current.output
    assert _kit(manifest, "upgrade", "monolith").exit_code == 0
    assert table_names(url) == {"notes", "alembic_version"}
    again = _kit(manifest, "baseline", "monolith")
    assert again.exit_code == 1 and "already names" in again.output


def test_baseline_never_overwrites_an_existing_file(tmp_path: Path) -> None:
    manifest = write_app_manifest(tmp_path, own_migrations=False)
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "env.py").write_text("# the team's\n")
    result = _kit(manifest, "baseline", "monolith")
    assert result.exit_code == 1 and "env.py" in result.output
    assert (tmp_path / "migrations" / "env.py").read_text() == "# the team's\n"
    assert "migrations]" not in manifest.read_text()


def test_an_unknown_app_is_named_with_the_known_ones(app: Path) -> None:
    result = _kit(app, "current", "shop")
    assert result.exit_code == 1 and "unknown app 'shop'; known: monolith, archive" in result.output


def test_the_removed_database_key_is_named_with_its_replacement(tmp_path: Path) -> None:
    manifest = write_app_manifest(tmp_path)
    manifest.write_text(
        manifest.read_text().replace("[monolith]\n", '[monolith]\ndatabase = "x"\n')
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert "monolith.database: was removed" in str(info.value)


def test_retires_contract_revision_is_chained_to_the_monoliths_own_head(app: Path) -> None:
    from kit.playbook.contract import render_contract

    assert _kit(app, "upgrade", "monolith").exit_code == 0
    source = render_contract(load_manifest(app), "archive")
    assert "down_revision = 'n0001_notes'" in source
    assert "op.drop_table('notes')" in source and "'tags'" not in source
    assert str(app.parent / "notes_migrations" / "versions") in source


def test_upgrade_refuses_a_database_whose_other_version_table_holds_a_foreign_revision(
    app: Path,
) -> None:
    """The issue's case: the manifest names the wrong version table; the app's own table
    says the database belongs to another history, so nothing is created in it."""
    url = f"sqlite:///{app.parent / 'var' / 'app.db'}"
    _exec(
        url,
        "CREATE TABLE users (id INTEGER PRIMARY KEY)",
        "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)",
        "INSERT INTO alembic_version VALUES ('a1b2c3_users')",
    )
    result = _kit(app, "upgrade", "monolith", "--url", url)
    assert result.exit_code == 1
    assert "'a1b2c3_users' in alembic_version" in result.output
    assert table_names(url) == {"users", "alembic_version"}
