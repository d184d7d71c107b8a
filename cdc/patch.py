"""Events with unchanged-TOAST placeholders, applied as partial updates of the stored row.

With the default replica identity, PostgreSQL leaves an unchanged TOASTed value out of an
UPDATE and Debezium writes a placeholder in its place (cdc.toast). Such an event cannot be
upserted as a full row: it becomes a "patch" action that updates only the columns the event
carries, so the stored values of the others stay. Within one batch a patch lands on top of
the earlier action of the same key (merge_patch); a patch with no row to complete is an
UnavailableRowError, which dead-letters the event.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from cdc.mapping import MappingError
from cdc.target import Action, TargetTable
from cdc.toast import unavailable_columns


class UnavailableRowError(SQLAlchemyError):
    """An event left columns out (unchanged-TOAST placeholder) and the target has no row to
    complete: the row cannot be rebuilt, so the event is dead-lettered (apply-time failure)."""


def rekey_deletes(
    op: str, target: TargetTable, before: dict[str, Any] | None, key: tuple[Any, ...]
) -> list[Action]:
    """An update that moved the row to another target key first deletes the old key."""
    if op != "u" or before is None:
        return []
    try:
        old_key = target.coerce_key(target.target_key(before))
    except MappingError:
        return []
    return [] if old_key == key else [Action("delete", target.mapping, old_key)]


def patch_actions(
    op: str, target: TargetTable, before: dict[str, Any] | None, after: dict[str, Any]
) -> list[Action]:
    """Row image with unchanged-TOAST placeholders: update only the columns it carries,
    so the stored values of the others stay (applied as an UPDATE of an existing row)."""
    tm = target.mapping
    gone = unavailable_columns(after)
    needs = {c.target: set(c.sources) for c in tm.columns}
    for k in tm.key:
        if needs.get(k, set()) & gone:
            raise MappingError(
                f"table {tm.source!r}: key column {k!r} has the unavailable-value placeholder"
            )
    filtered = {f.column for f in tm.filters} & gone
    if filtered:
        raise MappingError(
            f"table {tm.source!r}: filter column(s) {', '.join(sorted(filtered))} unavailable "
            "(unchanged TOAST); set REPLICA IDENTITY FULL on the source table"
        )
    key = target.coerce_key(target.target_key(after))
    actions = rekey_deletes(op, target, before, key)
    if target.matches is not None and not target.matches(after):
        tm.check_drift(after)
        actions.append(Action("delete", tm, key))
        return actions
    values = target.coerce(
        {
            c.target: c.apply(after, tm.source)
            for c in tm.columns
            if c.target not in tm.key and not needs[c.target] & gone
        }
    )
    actions.append(Action("patch", tm, key, patch=values))
    return actions


def merge_patch(target: TargetTable, prev: Action, patch: Action) -> Action:
    """`patch` applied on top of the earlier action `prev` of the same key (of `target`) in
    one batch."""
    assert patch.patch is not None
    if prev.kind == "upsert" and prev.row is not None:
        row = list(prev.row)
        for name, value in patch.patch.items():
            j = target.param_names.index(name)
            bind = target.binds[j]
            row[j] = bind(value) if bind is not None and value is not None else value
        return Action("upsert", prev.mapping, prev.key, tuple(row))
    if prev.kind == "patch" and prev.patch is not None:
        merged = {**prev.patch, **patch.patch}
        return Action("patch", prev.mapping, prev.key, patch=merged, after_delete=prev.after_delete)
    return Action("patch", patch.mapping, patch.key, patch=patch.patch, after_delete=True)


def write_patch(conn: Connection, target: TargetTable, action: Action) -> None:
    """Update the stored row with the columns the event carries; UnavailableRowError when
    there is no row to complete."""
    where = target.key_where([action.key])
    if action.after_delete:
        found = 0
    elif action.patch:
        found = conn.execute(update(target.table).where(where).values(**action.patch)).rowcount
    else:  # only unavailable columns changed: the row just has to exist
        found = conn.execute(select(func.count()).select_from(target.table).where(where))
        found = int(found.scalar() or 0)
    if not found:
        raise UnavailableRowError(
            f"{action.mapping.target} key {action.key!r}: the event has unchanged-TOAST "
            "placeholders (__debezium_unavailable_value) but the target has no row to keep "
            "those values from; set REPLICA IDENTITY FULL on the source table and re-snapshot "
            "or retry after the row exists"
        )
