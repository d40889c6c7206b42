# temporary: harness debugging (run with DATAENGINE_BOOTSTRAP_CHECKPOINT set); deleted when the test is done
from pathlib import Path

from tests.test_celery_e2e import *  # noqa
from tests.celery_cluster import CeleryCluster

_env = CeleryCluster.environment


def _patched(self):
    env = _env(self)
    store = self.connections["dataengine_store"]
    env.update(DATAENGINE_S3_ENDPOINT=f"{store['host']}:{store['port']}", DATAENGINE_S3_ACCESS_KEY=store["login"],
               DATAENGINE_S3_SECRET_KEY=store["password"], DATAENGINE_S3_SECURE="false",
               AIRFLOW__CORE__DAGS_FOLDER="/tmp/celery-debug/dags_fixed")
    return env


CeleryCluster.environment = _patched
