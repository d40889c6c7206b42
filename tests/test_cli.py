"""The `dataengine` command and the embedded runtime set-up."""
from __future__ import annotations

import subprocess
import sys

from dataengine import cli


def test_every_subcommand_has_help_and_a_function():
    import argparse

    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"init", "env"} <= set(subparsers.choices)
    def leaves(parser, path):
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not nested:
            yield path, parser
        for action in nested:
            for name, sub in action.choices.items():
                yield from leaves(sub, path + [name])

    for name, sub in subparsers.choices.items():
        assert sub.format_help().startswith(f"usage: dataengine {name}")
        for path, leaf in leaves(sub, [name]):
            assert leaf.get_default("func") is not None, f"subcommand {' '.join(path)} has no function"


def test_console_script_prints_help():
    out = subprocess.run([sys.executable, "-m", "dataengine.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "usage: dataengine" in out.stdout


def test_init_creates_store_catalog_and_airflow_pool(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAENGINE_HOME", str(tmp_path / "home"))
    assert cli.main(["init"]) == 0
    home = tmp_path / "home"
    assert (home / "store").is_dir()
    assert (home / "catalog.db").is_file()
    from dataengine.runtime import run_airflow

    pools = run_airflow(["pools", "list", "--output", "json"], home)
    assert '"gpu"' in pools.stdout
    # idempotent: a second init changes nothing and succeeds
    assert cli.main(["init"]) == 0


def test_bootstrap_model_fits_the_issue_budget_unless_told_otherwise():
    from dataengine.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["bootstrap-model", "--out", "/tmp/v0.pt"])
    assert args.time_budget_minutes == 60.0                   # within an hour on this machine by default
    fixed = parser.parse_args(["bootstrap-model", "--out", "/tmp/v0.pt", "--time-budget-minutes", "0"])
    assert fixed.time_budget_minutes == 0.0                   # the fixed recipe, BOOTSTRAP_PHASES
