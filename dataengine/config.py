"""Where the engine keeps its bytes and its state: `DATAENGINE_HOME`, the store URI and the catalog URL.

Resolution order (see docs/architecture.md, "Configuration"):
- store: `DATAENGINE_STORE_URI` (with `DATAENGINE_S3_ACCESS_KEY` / `DATAENGINE_S3_SECRET_KEY` for s3://),
  else the folder `$DATAENGINE_HOME/store`;
- catalog: `DATAENGINE_DB_URL`, else the SQLite file `$DATAENGINE_HOME/catalog.db`;
- Airflow home: `$DATAENGINE_HOME/airflow`.
Inside Airflow the connections `dataengine_store` / `dataengine_db` take precedence (resolved in `operators/`).
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_DIR = PACKAGE_DIR.parent


def engine_home() -> Path:
    """Return the engine's home folder (`DATAENGINE_HOME`, default `.engine/` in the checkout)."""
    configured = os.environ.get("DATAENGINE_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    if (CHECKOUT_DIR / "pyproject.toml").exists():
        return CHECKOUT_DIR / ".engine"
    return Path.cwd() / ".engine"


def store_uri() -> str:
    """Return the object store URI: `DATAENGINE_STORE_URI` or `file://$DATAENGINE_HOME/store`."""
    return os.environ.get("DATAENGINE_STORE_URI") or (engine_home() / "store").as_uri()


def db_url() -> str:
    """Return the catalog's SQLAlchemy URL: `DATAENGINE_DB_URL` or the SQLite file under the home."""
    return os.environ.get("DATAENGINE_DB_URL") or f"sqlite:///{engine_home() / 'catalog.db'}"


def airflow_home() -> Path:
    """Return the embedded Airflow home (`$DATAENGINE_HOME/airflow`)."""
    return engine_home() / "airflow"


def shipped_model_path() -> Path:
    """Return the path of the bootstrap `sam_tiny` v0 checkpoint (`DATAENGINE_BOOTSTRAP_CHECKPOINT` overrides
    the one shipped in the repository)."""
    configured = os.environ.get("DATAENGINE_BOOTSTRAP_CHECKPOINT")
    return Path(configured) if configured else PACKAGE_DIR / "assets" / "sam_tiny_v0.pt"
