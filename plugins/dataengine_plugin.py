"""Airflow plugin: the data engine's annotation service, mounted in Airflow's API server at `/dataengine`.

Airflow does not authenticate plugin apps, so every route of the service depends on Airflow's own login
(`GetUserDep`: a bearer JWT or the UI's `_token` cookie), the tool's and monitoring pages included; the
annotator is the Airflow user name. Public: only the API schema and the static scripts and styles
(`dataengine.service.app.PUBLIC_ROUTES`). The app is
built on the first request (not when plugins load), over the store and catalog of the connections
`dataengine_store` / `dataengine_db` (or the engine's configuration when they are not defined).
"""
import threading

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/dataengine"


def _airflow_auth():
    """Return the FastAPI dependency: Airflow's authenticated user -> annotator name (401 without a login)."""
    from airflow.api_fastapi.core_api.security import GetUserDep

    def annotator(user: GetUserDep) -> str:
        return user.get_name()

    return annotator


def _connection(conn_id: str):
    """Return Airflow connection `conn_id` (read by the API server from its secrets backends), or None."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        return Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        return None


def build_app():
    """Return the annotation service app over the engine's store and catalog, behind Airflow's login."""
    from dataengine.catalog import open_catalog
    from dataengine.connections import DB_CONN_ID, STORE_CONN_ID, catalog_url_from_connection, store_from_connection
    from dataengine.service import create_app
    from dataengine.storage import open_store

    store_conn, db_conn = _connection(STORE_CONN_ID), _connection(DB_CONN_ID)
    store = store_from_connection(store_conn) if store_conn is not None else open_store()
    catalog = open_catalog(catalog_url_from_connection(db_conn)) if db_conn is not None else open_catalog()
    return create_app(store, catalog, _airflow_auth(), torch_threads=1, public_pages=False,
                      title="Data engine annotation service (Airflow)")


class LazyApp:
    """An ASGI app that builds the real one on its first request (plugins load in every Airflow process)."""

    def __init__(self, factory):
        self._factory, self._app, self._lock = factory, None, threading.Lock()

    def _get(self):
        with self._lock:
            if self._app is None:
                self._app = self._factory()
            return self._app

    async def __call__(self, scope, receive, send):
        import anyio

        app = self._app or await anyio.to_thread.run_sync(self._get)
        await app(scope, receive, send)


annotation_app = LazyApp(build_app)


class DataEnginePlugin(AirflowPlugin):
    """Mounts the annotation service (API, browser tool, monitoring page) at /dataengine, with nav entries."""

    name = "dataengine"
    fastapi_apps = [{"app": annotation_app, "url_prefix": URL_PREFIX, "name": "Data engine annotation service"}]
    external_views = [
        {"name": "Annotate (data engine)", "href": f"{URL_PREFIX}/", "destination": "nav", "category": "browse",
         "url_route": "dataengine-annotate"},
        # The monitoring page, rendered inside the Airflow UI (an iframe at /plugin/dataengine-monitoring).
        {"name": "Data engine monitoring", "href": f"{URL_PREFIX}/monitoring", "destination": "nav",
         "category": "browse", "url_route": "dataengine-monitoring"},
    ]
