"""Customers bounded context. Public API: `monolith.customers.service`."""
