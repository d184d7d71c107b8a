"""`schema`: the service database at its Alembic head (the service's own history)."""

from __future__ import annotations

from kit.playbook.framework import Ctx, Step, StepFailed


class SchemaStep(Step):
    name = "schema"

    def preconditions(self, ctx: Ctx) -> list[str]:
        if ctx.s.migrations is None:
            return [f"services.{ctx.s.name}.migrations names no Alembic environment"]
        return []

    def action(self, ctx: Ctx) -> None:
        from kit.appdb import app_database

        rev = app_database(ctx.m, ctx.s.name).upgrade()
        ctx.evidence["revision"] = rev
        ctx.say(f"schema: {ctx.s.name} database at Alembic revision {rev}")

    def check(self, ctx: Ctx) -> None:
        from kit.appdb import app_database

        if not app_database(ctx.m, ctx.s.name).at_head():
            raise StepFailed(f"{ctx.s.name} database is not at its Alembic head")

    def rollback(self, ctx: Ctx) -> None:
        from kit.appdb import app_database

        app_database(ctx.m, ctx.s.name).downgrade("base")
        ctx.say(f"schema: {ctx.s.name} database downgraded to base")
