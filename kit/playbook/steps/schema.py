"""`schema`: the service database at its Alembic head."""

from __future__ import annotations

from kit.playbook.framework import Ctx, Step, StepFailed


class SchemaStep(Step):
    name = "schema"

    def preconditions(self, ctx: Ctx) -> list[str]:
        if not ctx.s.database:
            return [f"services.{ctx.s.name}.database names no Alembic environment"]
        return []

    def action(self, ctx: Ctx) -> None:
        from kit import alembic_runner

        alembic_runner.upgrade(ctx.s.database or ctx.s.name, ctx.s.database_url)
        rev = alembic_runner.current(ctx.s.database or ctx.s.name, ctx.s.database_url)
        ctx.evidence["revision"] = rev
        ctx.say(f"schema: {ctx.s.name} database at Alembic revision {rev}")

    def check(self, ctx: Ctx) -> None:
        from kit import alembic_runner

        db = ctx.s.database or ctx.s.name
        if alembic_runner.current(db, ctx.s.database_url) not in alembic_runner.heads(db):
            raise StepFailed(f"{db} database is not at its Alembic head")

    def rollback(self, ctx: Ctx) -> None:
        from kit import alembic_runner

        alembic_runner.downgrade(ctx.s.database or ctx.s.name, ctx.s.database_url, "base")
        ctx.say(f"schema: {ctx.s.name} database downgraded to base")
