"""`kit step`: mounted from kit/commands/playbook.py (one `cli` per module, see kit/cli.py)."""

from kit.commands.playbook import step as cli

__all__ = ["cli"]
