"""Subcommands of the ``genops`` CLI, one module each."""
