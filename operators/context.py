"""What every task of the data engine's DAGs needs from its Airflow context: the run's store prefix and the
engine's store and catalog (resolved through the hooks: Airflow connections first, then the environment)."""
from __future__ import annotations

from airflow.sdk import get_current_context


def run_prefix() -> str:
    """Return the store prefix of the running DAG run's outputs (`runs/{dag_id}/{run_id}`)."""
    from dataengine.pipeline.automatic import run_prefix as prefix_of

    context = get_current_context()
    return prefix_of(context["dag"].dag_id, context["run_id"])


def store():
    """Return the engine's object store, resolved through the `dataengine_store` hook."""
    from operators.hooks import EngineStoreHook

    return EngineStoreHook().get_store()


def engine():
    """Return (store, catalog) of the engine, resolved through the `dataengine_store` / `dataengine_db` hooks."""
    from operators.hooks import EngineCatalogHook

    return store(), EngineCatalogHook().get_catalog()


def fail_unless(outcome: dict, key: str) -> dict:
    """Print a quality step's message; fail the task for good (no retry) when `outcome[key]` is false, with the
    message as the reason; else return the outcome."""
    from airflow.sdk.exceptions import AirflowFailException

    print(outcome["message"])
    if not outcome[key]:
        raise AirflowFailException(outcome["message"])
    return outcome
