"""Running the kit: process supervision (`kit up`/`kit down`), the CDC watchdog, client
traffic, and the live migration demo (docs/running.md)."""
