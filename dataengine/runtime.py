"""The embedded runtime under `DATAENGINE_HOME`: folders, catalog schema, and an Airflow home.

`init_runtime()` is what `dataengine init` (and so `make demo`) runs first. It is idempotent: running it
again migrates what is behind and changes nothing else. Airflow is driven through its own command line
in a subprocess, so this module (like the whole engine) never imports Airflow.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dataengine import config

# Pools every DAG may reference, created at set-up: name -> (slots, description).
# `gpu`: one slot per GPU (SAM paper stage runs are GPU-bound); raise it when adding GPU workers.
POOLS: dict[str, tuple[int, str]] = {
    "gpu": (1, "GPU slots: one per GPU on the workers that consume the 'gpu' queue"),
}

# Parallelism for a small machine (the default 32 pre-spawns 32 LocalExecutor workers).
EMBEDDED_PARALLELISM = 4


def airflow_env(home: Path | None = None) -> dict[str, str]:
    """Return the environment variables that point Airflow at the embedded runtime and this checkout."""
    home = home or config.engine_home()
    checkout = config.CHECKOUT_DIR
    python_path = [str(checkout)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {
        "DATAENGINE_HOME": str(home),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(checkout / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(checkout / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": str(EMBEDDED_PARALLELISM),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(EMBEDDED_PARALLELISM),
        "AIRFLOW__SCHEDULER__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "GX_ANALYTICS_ENABLED": "False",
        "PYTHONPATH": os.pathsep.join(python_path),
    }


@dataclass
class RuntimeInfo:
    """What `init_runtime` set up, for the summary a user reads."""

    home: Path
    store_uri: str
    db_url: str
    airflow_home: Path
    pools: dict[str, int]
    production_model: str | None = None


def run_airflow(args: list[str], home: Path | None = None, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run `airflow ARGS...` against the embedded runtime; return the completed process."""
    env = {**os.environ, **airflow_env(home)}
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=env, check=check,
                          capture_output=True, text=True, **kwargs)


def init_runtime(home: Path | None = None, with_airflow: bool = True) -> RuntimeInfo:
    """Create folders, migrate the catalog, and (optionally) migrate Airflow's DB and create the pools."""
    from dataengine.catalog import open_catalog
    from dataengine.storage import open_store

    home = home or config.engine_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DATAENGINE_HOME", str(home))
    store = open_store(config.store_uri())
    catalog = open_catalog(config.db_url())
    catalog.migrate()
    production = None
    if config.shipped_model_path().exists():
        from dataengine.model.registry import ensure_bootstrap_model

        production = ensure_bootstrap_model(store, catalog)["version_id"]
    if with_airflow:
        (home / "airflow").mkdir(parents=True, exist_ok=True)
        run_airflow(["db", "migrate"], home)
        for name, (slots, description) in POOLS.items():
            run_airflow(["pools", "set", name, str(slots), description], home)
    return RuntimeInfo(home=home, store_uri=store.uri, db_url=config.db_url(),
                       airflow_home=home / "airflow", pools={k: v[0] for k, v in POOLS.items()},
                       production_model=production)
