"""Subcommands of the `glassvit` CLI, one module per area (see glassvit/cli.py)."""
