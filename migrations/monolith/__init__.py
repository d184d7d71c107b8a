"""Alembic environment of the monolith database (version table `alembic_version_monolith`)."""
