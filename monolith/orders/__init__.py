"""Orders bounded context: orders, order lines, status lifecycle. Public API: `service`."""
