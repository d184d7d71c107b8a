"""Each service's Alembic environment builds exactly its models' schema, and tears it down."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect

from extracted.catalog.models import Base as CatalogBase
from extracted.customers.models import Base as CustomersBase
from kit import alembic_runner
from migrations import shop_migrations
from tests.contract.harness import downgrade, migrate

SCHEMAS: dict[str, tuple[MetaData, set[str]]] = {
    "catalog": (CatalogBase.metadata, {"catalog_category", "catalog_product"}),
    "customers": (CustomersBase.metadata, {"customer"}),
}


@pytest.mark.parametrize("service", sorted(SCHEMAS))
def test_service_migrations_go_up_match_the_models_and_come_back_down(
    service: str, tmp_path: Path
) -> None:
    metadata, tables = SCHEMAS[service]
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(service, url)
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) == tables | {f"alembic_version_{service}"}
        assert (
            alembic_runner.current(shop_migrations(service), url)
            == alembic_runner.heads(shop_migrations(service))[0]
        )
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={"compare_type": True, "version_table": f"alembic_version_{service}"},
            )
            assert compare_metadata(context, metadata) == []
        downgrade(service, url)
        assert set(inspect(engine).get_table_names()) == {f"alembic_version_{service}"}
        assert alembic_runner.current(shop_migrations(service), url) is None
    finally:
        engine.dispose()
