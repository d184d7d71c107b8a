"""`kit rollback`: mounted from kit/commands/playbook.py (one `cli` per module, see kit/cli.py)."""

from kit.commands.playbook import rollback as cli

__all__ = ["cli"]
