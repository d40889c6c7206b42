"""The `dataengine` command: one subcommand per engine operation.

Each subcommand lives in its own module under `dataengine/commands/` with a `register(subparsers)`
function that adds its parser and sets `func`; this file only assembles them. Heavy imports (torch,
cv2, great_expectations) happen inside the command functions, so `dataengine --help` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "dataengine.commands.init",
    "dataengine.commands.demo",
    "dataengine.commands.ingest",
    "dataengine.commands.models",
    "dataengine.commands.segment",
    "dataengine.commands.synth",
    "dataengine.commands.evaluate",
    "dataengine.commands.train",
    "dataengine.commands.serve",
    "dataengine.commands.annotate",
]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="dataengine",
        description="Segmentation data engine (SAM / SA-1B style) on Apache Airflow.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
