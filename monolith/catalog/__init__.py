"""Catalog bounded context: categories and products. Public API: `monolith.catalog.service`."""
