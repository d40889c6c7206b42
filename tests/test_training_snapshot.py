"""The training snapshot of `sa_retrain`: every accepted source with its share, gold never, and stage 3 masks that
never replace a human mask of the same object (no Airflow: the engine functions on a real file store)."""
from __future__ import annotations

import pytest

from dataengine.pipeline.snapshot import (SAME_OBJECT_IOU, check_shares, image_id_of, realise_shares,
                                          snapshot_training_data)

MODEL = {"name": "sam_tiny", "version": "v0", "version_id": "sam_tiny/v0", "sha256": "0" * 64}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A home with 4 train images and 1 gold image; A has a stage 1 record, B a stage 2 record."""
    from dataengine.ingest import ingest
    from dataengine.synth import write_scenes
    from tests.engine_home import engine_home
    from tests.test_retrain import _record_for

    home = tmp_path_factory.mktemp("snapshot-home")
    with engine_home(home) as (store, catalog):
        write_scenes(home / "gold", 1, seed=760_000)
        gold_id = ingest(str(home / "gold"), store, catalog, gold_set="snap-gold", run_id="gold").image_ids[0]
        write_scenes(home / "train", 4, seed=761_000)
        train = sorted(ingest(str(home / "train"), store, catalog, run_id="train").image_ids)
        truth = {i: _record_for(home / "train", i) for i in train}
        truth[gold_id] = _record_for(home / "gold", gold_id)
        a, b = train[0], train[1]
        store.put_json(f"annotations/stage1/{a}.json", _keep(truth[a], [0]))       # a person masked object 0 of A
        store.put_json(f"annotations/stage2/{b}.json", truth[b])
        # a gold image's record where none should be: the snapshot must leave it out all the same
        store.put_json(f"annotations/stage1/{gold_id}.json", truth[gold_id])
        yield {"store": store, "catalog": catalog, "truth": truth, "train": train, "gold": gold_id}


def _keep(record: dict, indices: list[int]) -> dict:
    return {**record, "annotations": [record["annotations"][i] for i in indices]}


def _rle(mask) -> dict:
    import numpy as np
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _dilated(annotation: dict, pixels: int = 1) -> dict:
    """The annotation with its mask grown by `pixels` (the same object, drawn a little differently)."""
    import cv2
    import numpy as np

    from dataengine.masks import coco_decode

    mask = coco_decode(annotation["segmentation"]).astype(np.uint8)
    grown = cv2.dilate(mask, np.ones((2 * pixels + 1,) * 2, np.uint8)).astype(bool)
    ys, xs = np.nonzero(grown)
    return {**annotation, "segmentation": _rle(grown), "area": int(grown.sum()),
            "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())],
            "id": f"{annotation['id']}-stage3"}


def _publish_stage3(engine, run_id: str, records: list[dict], success: bool = True) -> str:
    from dataengine.release import publish_release

    store, catalog = engine["store"], engine["catalog"]
    keys = []
    for record in records:
        key = f"runs/test/{run_id}/records/{record['image']['image_id']}.json"
        store.put_json(key, record)
        keys.append(key)
    store.put_json(f"runs/test/{run_id}/records.json", keys)
    manifest = publish_release(store, catalog, stage="stage3", dag_id="test", run_id=run_id,
                               table={"records_key": f"runs/test/{run_id}/records.json"}, model=MODEL,
                               settings={}, gate={"summary": {"success": success}}, gold={}, audit={})
    return manifest["release_id"]


@pytest.fixture(scope="module")
def stage3(engine):
    """Two gated stage 3 releases and one whose gate failed.

    First: A (object 0 of A a little grown, which a person already masked, and object 1), C, and the gold image.
    Second, later: C again with only its object 0. Failed gate: D."""
    truth, (a, _, c, d) = engine["truth"], engine["train"]
    first_a = {**truth[a], "annotations": [_dilated(truth[a]["annotations"][0]), truth[a]["annotations"][1]]}
    first = _publish_stage3(engine, "stage3-first", [first_a, truth[c], truth[engine["gold"]]])
    second = _publish_stage3(engine, "stage3-second", [_keep(truth[c], [0])])
    failed = _publish_stage3(engine, "stage3-failed", [truth[d]], success=False)
    return {"first": first, "second": second, "failed": failed}


SHARES = {"stage1": 0.4, "stage2": 0.2, "stage3": 0.4}


def test_snapshot_lists_every_source_with_its_share_and_never_a_gold_image(engine, stage3):
    store = engine["store"]
    result = snapshot_training_data(store, engine["catalog"], "runs/test/snap-1", SHARES)
    snapshot = store.get_json(result["snapshot_key"])
    a, b, c, d = engine["train"]
    sources = snapshot["sources"]
    assert sources["stage1"] == [f"annotations/stage1/{a}.json"]
    assert sources["stage2"] == [f"annotations/stage2/{b}.json"]
    assert sorted(image_id_of(k) for k in sources["stage3"]) == sorted([a, c])   # not D: its gate failed
    every_key = set(snapshot["records"]) | {k for keys in sources.values() for k in keys}
    assert engine["gold"] not in {image_id_of(k) for k in every_key}
    assert snapshot["stage3"]["dropped"]["gold_images"] == 1
    assert snapshot["stage3"]["releases"] == [stage3["first"], stage3["second"]]
    # one record each of stage 1 and 2, two of stage 3: 5 images an epoch at 2 / 1 / 2
    assert snapshot["realised_shares"] == SHARES and len(snapshot["records"]) == 5
    assert set(snapshot["records"]) == {k for keys in sources.values() for k in keys}
    assert result["sources"]["stage3"] == {"records": 2, "masks": 2}


def test_stage3_masks_never_replace_a_human_mask_of_the_same_object(engine, stage3):
    store, truth = engine["store"], engine["truth"]
    a, _, c, _ = engine["train"]
    result = snapshot_training_data(store, engine["catalog"], "runs/test/snap-2", SHARES)
    snapshot = store.get_json(result["snapshot_key"])
    stage3_a = store.get_json(f"runs/test/snap-2/stage3/{a}.json")
    # object 0 of A (grown by a pixel, IoU >= SAME_OBJECT_IOU with the person's mask) is dropped, object 1 kept
    assert [ann["id"] for ann in stage3_a["annotations"]] == [truth[a]["annotations"][1]["id"]]
    assert snapshot["stage3"]["dropped"]["same_object_as_human"] == 1
    assert store.get_json(f"annotations/stage1/{a}.json") == _keep(truth[a], [0])    # the human record as it was
    # each stage 3 record comes from one run: C from the later release, with its own masks only
    assert snapshot["stage3"]["origin"] == {a: stage3["first"], c: stage3["second"]}
    assert store.get_json(f"runs/test/snap-2/stage3/{c}.json")["annotations"] == _keep(truth[c], [0])["annotations"]


def test_a_stage3_mask_overlapping_a_human_mask_below_the_threshold_is_kept():
    from dataengine.pipeline.snapshot import without_human_objects

    def square(x0, size=10):
        import numpy as np

        mask = np.zeros((40, 60), bool)
        mask[5:5 + size, x0:x0 + size] = True
        return {"segmentation": _rle(mask)}

    human = {"annotations": [square(10)]}
    record = {"image": {}, "annotations": [square(12), square(16)]}   # IoU 80/120 = 0.67, 40/160 = 0.25
    kept, dropped = without_human_objects(record, [human])
    assert dropped == 1 and kept["annotations"] == [record["annotations"][1]]
    assert without_human_objects(record, [human], iou=0.7)[1] == 0 and SAME_OBJECT_IOU == 0.5


def test_default_shares_train_on_human_masks_only(engine, stage3):
    result = snapshot_training_data(engine["store"], engine["catalog"], "runs/test/snap-3")
    snapshot = engine["store"].get_json(result["snapshot_key"])
    assert snapshot["sources"]["stage3"] == [] and snapshot["stage3"]["releases"] == []
    assert snapshot["realised_shares"] == {"stage1": 0.5, "stage2": 0.5, "stage3": 0.0}


def test_only_the_named_stage3_releases_are_read(engine, stage3):
    result = snapshot_training_data(engine["store"], engine["catalog"], "runs/test/snap-4",
                                    {"stage3": 1.0}, stage3_releases=[stage3["second"]])
    snapshot = engine["store"].get_json(result["snapshot_key"])
    assert snapshot["stage3"]["releases"] == [stage3["second"]]
    assert [image_id_of(k) for k in snapshot["records"]] == [engine["train"][2]]
    with pytest.raises(ValueError, match="not published stage 3 releases"):
        snapshot_training_data(engine["store"], engine["catalog"], "runs/test/snap-5", {"stage3": 1.0},
                               stage3_releases=["stage3-nowhere"])


def test_shares_are_realised_by_repeating_records_never_by_leaving_any_out():
    records, realised = realise_shares({"stage1": ["s1/a.json", "s1/b.json", "s1/c.json", "s1/d.json"],
                                        "stage2": ["s2/a.json"], "stage3": []},
                                       {"stage1": 0.5, "stage2": 0.25, "stage3": 0.25})
    # stage 3 has no records: its share goes to the others (2:1), so stage 2's one record is repeated twice
    assert records.count("s2/a.json") == 2 and all(records.count(f"s1/{x}.json") == 1 for x in "abcd")
    assert realised == {"stage1": round(4 / 6, 4), "stage2": round(2 / 6, 4), "stage3": 0.0}
    with pytest.raises(ValueError, match="nothing to train on"):
        realise_shares({"stage1": [], "stage2": ["s2/a.json"], "stage3": []}, {"stage1": 1.0})


def test_bad_shares_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="unknown sources \\['stage4'\\]"):
        check_shares({"stage4": 1.0})
    with pytest.raises(ValueError, match="finite number >= 0"):
        check_shares({"stage1": -0.5})
    with pytest.raises(ValueError, match="at least one source"):
        check_shares({"stage1": 0, "stage2": 0})
    assert check_shares({"stage3": 1}) == {"stage1": 0.0, "stage2": 0.0, "stage3": 1.0}
