"""Subcommands of the `dataengine` command, one module each (see `dataengine.cli`)."""
