"""Airflow hooks that hand the engine its object store and catalog, from Airflow connections.

- `EngineStoreHook` resolves the connection `dataengine_store` to an `ObjectStore`;
- `EngineCatalogHook` resolves `dataengine_db` to a `Catalog`.
The hooks fetch the connection from Airflow; `dataengine.connections` reads its fields (listed there), the same
way the API server's plugin does. Both fall back to `dataengine.config` (environment variables, then the
embedded defaults under `DATAENGINE_HOME`) when the connection is not defined. Nothing heavy is imported at
module level.
"""
from __future__ import annotations

import os
import threading

from airflow.sdk import BaseHook

from dataengine.connections import DB_CONN_ID, STORE_CONN_ID, catalog_url_from_connection, store_from_connection

_catalogs: dict[tuple[int, str], object] = {}  # (process id, URL): never share a pool across a fork
_catalogs_lock = threading.Lock()


def _not_found_errors() -> tuple[type[Exception], ...]:
    from airflow.sdk.exceptions import AirflowNotFoundException

    errors: list[type[Exception]] = [AirflowNotFoundException]
    try:
        from airflow.exceptions import AirflowNotFoundException as CoreNotFound

        errors.append(CoreNotFound)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def _optional_connection(conn_id: str):
    """Return the Airflow connection `conn_id`, or None when it is not defined."""
    try:
        return BaseHook.get_connection(conn_id)
    except _not_found_errors():
        return None


class EngineStoreHook(BaseHook):
    """Resolves the engine's object store from the connection `dataengine_store` (or the engine's config)."""

    conn_name_attr = "conn_id"
    default_conn_name = STORE_CONN_ID
    conn_type = "dataengine_store"
    hook_name = "Data engine object store"

    def __init__(self, conn_id: str = STORE_CONN_ID, **kwargs):
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def get_store(self):
        """Return the `ObjectStore`: from the connection if defined, else `DATAENGINE_STORE_URI` / embedded."""
        from dataengine.storage import open_store

        conn = _optional_connection(self.conn_id)
        if conn is None:
            self.log.debug("connection %s not defined: using the engine's configured store", self.conn_id)
            return open_store()
        return store_from_connection(conn)

    def get_conn(self):
        """Return the store (Airflow's generic hook entry point)."""
        return self.get_store()


class EngineCatalogHook(BaseHook):
    """Resolves the engine's catalog from the connection `dataengine_db` (or the engine's config)."""

    conn_name_attr = "conn_id"
    default_conn_name = DB_CONN_ID
    conn_type = "dataengine_db"
    hook_name = "Data engine catalog"

    def __init__(self, conn_id: str = DB_CONN_ID, **kwargs):
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def get_url(self) -> str:
        """Return the catalog's SQLAlchemy URL: from the connection if defined, else `DATAENGINE_DB_URL` / embedded."""
        from dataengine import config

        conn = _optional_connection(self.conn_id)
        return catalog_url_from_connection(conn) if conn is not None else config.db_url()

    def get_catalog(self):
        """Return the migrated `Catalog` (one per URL and process, so its connection pool is reused)."""
        from dataengine.catalog import open_catalog

        key = (os.getpid(), self.get_url())
        with _catalogs_lock:
            if key not in _catalogs:
                _catalogs[key] = open_catalog(key[1])
            return _catalogs[key]

    def get_conn(self):
        """Return the catalog (Airflow's generic hook entry point)."""
        return self.get_catalog()


__all__ = ["EngineStoreHook", "EngineCatalogHook", "store_from_connection", "catalog_url_from_connection",
           "STORE_CONN_ID", "DB_CONN_ID"]
