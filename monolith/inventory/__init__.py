"""Inventory bounded context: stock per product and reservations. Public API: `service`."""
