# temporary: harness debugging (run with DATAENGINE_BOOTSTRAP_CHECKPOINT set); deleted when the test is done
from tests.test_celery_e2e import *  # noqa
from tests.celery_cluster import CeleryCluster

_env = CeleryCluster.environment


def _patched(self):
    env = _env(self)
    store = self.connections["dataengine_store"]
    env.update(DATAENGINE_S3_ENDPOINT=f"{store['host']}:{store['port']}", DATAENGINE_S3_ACCESS_KEY=store["login"],
               DATAENGINE_S3_SECRET_KEY=store["password"], DATAENGINE_S3_SECURE="false")
    return env


CeleryCluster.environment = _patched

import tests.test_celery_e2e as e2e
e2e.CONF = {**e2e.CONF, "amg_settings": {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}}
