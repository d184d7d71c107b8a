"""`kit advance`: mounted from kit/commands/playbook.py (one `cli` per module, see kit/cli.py)."""

from kit.commands.playbook import advance as cli

__all__ = ["cli"]
