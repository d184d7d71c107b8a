"""Change capture adapters (SQLite triggers; PostgreSQL logical decoding elsewhere)."""
