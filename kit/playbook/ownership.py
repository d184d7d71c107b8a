"""Who owns writes, in one place.

For every table of a service exactly one side accepts writes at any moment: the monolith
(forward CDC copies its rows to the service) until the `writes` step, the service (reverse
CDC copies back) after it. A write endpoint must be served by that side only; a route that
sends writes elsewhere forks the data (rows that never reach the other side, then the same id
handed out twice and one row overwritten by CDC).

Replicas (`replicas = [...]` in the manifest) are read-only copies of reference data: they are
never owned by the service that holds them. Their writes belong to the table's source side —
the monolith, or the service whose `tables` list it once that service's `writes` step ran —
and the copy refuses every write but its CDC sink's (cdc.readonly).

The only way to move a service's writes is the playbook's own operation: `kit step S writes`
(forward) and `kit rollback S` at `writes` (back). Each drains the CDC of the old owner,
switches the capture direction and flips ALL the service's write routes in one route-table
version (kit.playbook.steps.writes). Every other way of changing routes — `kit route set`,
the admin API, the dashboard — goes through the route guard, which refuses a write endpoint
routed to the side that does not own the writes and names the command that does it properly.
"""

from __future__ import annotations

from typing import Any

MONOLITH, SERVICE = "monolith", "service"

# the one route mode a write endpoint may have, per owner (shadow or canary would let the
# other side see writes too: shadowed writes, or a share of them)
WRITE_MODE: dict[str, str] = {MONOLITH: "monolith", SERVICE: "extracted"}


def write_route_refusal(
    service: str, label: str, mode_kind: str, owner: str, step: str | None, tables: str
) -> str | None:
    """Why routing write endpoint `label` to `mode_kind` breaks single ownership (or None)."""
    if WRITE_MODE.get(owner) == mode_kind:
        return None
    if owner == MONOLITH:
        return (
            f"forward CDC still owns {tables}: routing write endpoint {label} to {service!r} "
            f"would fork the data; way forward: `kit step {service} writes` moves ownership "
            "first (or force)"
        )
    undo = (
        "`kit rollback {s}` (twice: retire, then writes)"
        if step == "retire"
        else ("`kit rollback {s}`")
    )
    return (
        f"{service!r} owns the writes of {tables}: routing write endpoint {label} to "
        f"{mode_kind} would let the monolith accept writes that never reach {service!r} "
        f"(new rows lost there, then the same id handed out twice and one row overwritten by "
        f"reverse CDC); way forward: {undo.format(s=service)} drains reverse CDC, restarts "
        "forward CDC and moves every write route back in one version (force risks exactly "
        "that data loss and is audited)"
    )


def owned_tables(m: Any, service: str) -> tuple[str, ...]:
    """The tables whose writes `service` takes over at `writes`: its `tables`, never its
    replicas."""
    return tuple(m.service(service).tables)


def table_writer(m: Any, state: Any, table: str) -> str:
    """Who accepts writes of `table` right now: `monolith`, or the name of the service that
    took it over and passed `writes`. A replica never makes its holder the writer."""
    owner = m.owner_of_table(table)
    if owner is not None and state.get(owner).write_owner == SERVICE:
        return owner
    return MONOLITH
