"""`extracted` never imports `monolith`, and neither service imports the other."""

from __future__ import annotations

import grimp
import pytest
from click.testing import CliRunner

from kit.commands.db import cli as db_cli


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("extracted", "monolith", "shoplib", cache_dir=None)


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("extracted", "monolith"),
        ("monolith", "extracted"),
        ("extracted.catalog", "extracted.customers"),
        ("extracted.customers", "extracted.catalog"),
        ("shoplib", "extracted"),
    ],
)
def test_forbidden_imports_are_absent(
    graph: grimp.ImportGraph, importer: str, imported: str
) -> None:
    chains = graph.find_shortest_chains(importer=importer, imported=imported)
    assert chains == set(), f"{importer} reaches {imported}: {chains}"


def test_kit_db_migrates_each_service_database(tmp_path: object) -> None:
    runner = CliRunner()
    for service, head in (("catalog", "c0001_initial"), ("customers", "u0001_initial")):
        url = f"sqlite:///{tmp_path}/{service}.db"
        result = runner.invoke(db_cli, ["upgrade", service, "--url", url])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"{service}: upgraded to {head}"
        result = runner.invoke(db_cli, ["downgrade", service, "--url", url])
        assert result.exit_code == 0 and "(base)" in result.output
