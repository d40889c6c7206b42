"""Shared fixtures. Airflow and the engine are pointed at throw-away homes before anything imports them."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="dataengine-tests-"))

# Isolate Airflow and the engine from any real home: this must run before `airflow` is imported.
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["DATAENGINE_HOME"] = str(_SESSION_DIR / "engine")
os.environ["GX_ANALYTICS_ENABLED"] = "False"
for leaked in ("DATAENGINE_STORE_URI", "DATAENGINE_DB_URL"):
    os.environ.pop(leaked, None)
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fixtures_airflow import airflow_db, run_dag  # noqa: E402,F401
from tests.fixtures_services import *  # noqa: E402,F401,F403  (S3 server and PostgreSQL fixtures)
