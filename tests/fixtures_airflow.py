"""Airflow fixtures: a migrated metadata DB for the session, and `run_dag` for `dag.test()` runs.

Airflow 3.3's `dag.test()` needs the DAG serialized in the metadata DB through a DAG bundle first
(see docs/architecture.md, "Testing"): `run_dag` does that for any DAG object, including DAGs from `dags/`.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def airflow_db():
    """Migrate the session's Airflow metadata DB (SQLite under the temporary AIRFLOW_HOME) once."""
    from airflow.utils.db import initdb

    initdb()
    from airflow.models.pool import Pool
    from dataengine.runtime import POOLS

    for name, (slots, description) in POOLS.items():
        Pool.create_or_update_pool(name=name, slots=slots, description=description, include_deferred=False)
    return True


def serialize_and_test(dag, **kwargs):
    """Serialize `dag` into the metadata DB (migrated by `airflow_db`), then run `dag.test(**kwargs)`; return the
    DagRun. For module-scoped fixtures; tests take the `run_dag` fixture."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder="/nonexistent-empty-folder", collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, bundle_name="dags-folder", bundle_version=None)
    return dag.test(**kwargs)


@pytest.fixture
def run_dag(airflow_db):
    """Return `run(dag, **kwargs) -> DagRun`: serialize the DAG into the metadata DB, then `dag.test()`."""
    return serialize_and_test
