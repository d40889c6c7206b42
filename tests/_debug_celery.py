# temporary: harness debugging before the shipped model and the sam_tiny preset exist (deleted afterwards)
import pytest
import tests.test_celery_e2e as e2e
from tests.test_celery_e2e import *  # noqa

e2e.CONF = {**e2e.CONF, "preset": "official"}

@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    from dataengine.synth import write_scenes
    root = tmp_path_factory.mktemp("celery-batch")
    write_scenes(root / "images", e2e.NEW_IMAGES, seed=720_000)
    for side_car in (root / "images").glob("*.json"):
        side_car.unlink()
    write_scenes(root / "gold", e2e.GOLD_IMAGES, seed=730_000)
    return {"images": str(root / "images"), "gold": str(root / "gold"), "checkpoint": "/tmp/celery-debug/untrained.pt"}
