"""SA-1B records, tar shards and the COCO export; the `dataengine segment` command end to end."""
from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest
import torch

from dataengine.formats.coco import coco_from_records, load_coco
from dataengine.formats.sa1b import read_record, record_from_masks, validate_sa1b_record, write_record
from dataengine.formats.shards import read_shard, shard_name, write_shard


def masks_for(height=40, width=60, seed=0):
    """Generator-style records (coco_rle) of a few rectangles and an ellipse, built without a model."""
    import cv2

    from dataengine.masks import box_xyxy_to_xywh, coco_encode_rle, masks_to_rles

    rng = np.random.RandomState(seed)
    masks = np.zeros((4, height, width), np.uint8)
    masks[0, 5:20, 10:30] = 1
    masks[1, 25:38, 2:9] = 1
    cv2.ellipse(masks[2], (40, 20), (12, 8), 0, 0, 360, 1, -1)
    masks[3, 0:3, 55:60] = 1
    encoded = masks_to_rles(torch.from_numpy(masks.astype(bool)))
    return [{"segmentation": coco_encode_rle(rle), "area": int(area), "bbox": box_xyxy_to_xywh(box),
             "predicted_iou": float(rng.rand()), "point_coords": [[float(rng.rand() * width), 7.5]],
             "stability_score": 0.97, "crop_box": [0, 0, width, height]}
            for rle, area, box in zip(encoded.rles, encoded.areas.tolist(), encoded.boxes.tolist())]


def record(image_id="img1", seed=0):
    return record_from_masks(image_id, 60, 40, masks_for(seed=seed))


def jpeg(seed=0):
    import cv2

    image = np.full((40, 60, 3), 10 * seed, np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def test_record_round_trips_and_validates(tmp_path):
    rec = record()
    validate_sa1b_record(rec, image_size=(40, 60))
    write_record(tmp_path / "sa_img1.json", rec)
    assert read_record(tmp_path / "sa_img1.json") == rec
    assert rec["annotations"][0]["bbox"] == [10, 5, 19, 14]      # max - min, not pycocotools' [10, 5, 20, 15]


CORRUPTIONS = [
    (lambda r: r["annotations"][1].update(area=r["annotations"][1]["area"] + 1), "annotation 1: area"),
    (lambda r: r["annotations"][0].update(bbox=[10, 5, 20, 15]), "annotation 0: bbox"),
    (lambda r: r["annotations"][2]["segmentation"].update(size=[41, 60]), "annotation 2: RLE size"),
    (lambda r: r["annotations"][2]["segmentation"].update(counts="!!"), "annotation 2: RLE does not decode"),
    (lambda r: r["annotations"][3].update(id=0), "annotation 0: duplicate"),
    (lambda r: r["annotations"][0].pop("stability_score"), "annotation 0: expected keys"),
    (lambda r: r["annotations"][1].update(crop_box=[0, 0, 70, 40]), "annotation 1: crop_box"),
    (lambda r: r["annotations"][1].update(point_coords=[1, 2]), "annotation 1: point_coords"),
    (lambda r: r["annotations"][1].update(predicted_iou="high"), "annotation 1: predicted_iou"),
    (lambda r: r["image"].update(width=0), "width and height"),
    (lambda r: r.update(extra=1), "expected keys"),
]


@pytest.mark.parametrize("corrupt,message", CORRUPTIONS)
def test_validator_names_the_annotation_and_the_problem(corrupt, message):
    rec = copy.deepcopy(record())
    corrupt(rec)
    with pytest.raises(ValueError, match=message):
        validate_sa1b_record(rec)


def test_validator_checks_the_image_size():
    with pytest.raises(ValueError, match="record says 60x40 but the image is 61x40"):
        validate_sa1b_record(record(), image_size=(40, 61))


class OneWayStream(io.RawIOBase):
    """A write-only, non-seekable stream (like an upload pipe)."""

    def __init__(self):
        self.chunks = []

    def writable(self):
        return True

    def write(self, data):
        self.chunks.append(bytes(data))
        return len(data)


def test_shards_are_streamed_deterministic_and_read_back():
    items = [(record(f"img{i}", seed=i), jpeg(i)) for i in range(3)]
    first, second = OneWayStream(), io.BytesIO()
    assert write_shard(first, items) == 3
    write_shard(second, items)
    data = b"".join(first.chunks)
    assert data == second.getvalue()                        # same input, same bytes
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["sa_img0.jpg", "sa_img0.json", "sa_img1.jpg", "sa_img1.json",
                                         "sa_img2.jpg", "sa_img2.json"]
    assert {m.mtime for m in members} == {0} and {m.uid for m in members} == {0}
    back = list(read_shard(data))
    assert [r for r, _ in back] == [r for r, _ in items] and [j for _, j in back] == [j for _, j in items]
    assert shard_name(7) == "sa_000007.tar"


def test_shard_refuses_bad_members():
    with pytest.raises(ValueError, match="img0 is not JPEG"):
        write_shard(io.BytesIO(), [(record("img0"), b"PNG...")])
    with pytest.raises(ValueError, match="appears twice"):
        write_shard(io.BytesIO(), [(record("img0"), jpeg()), (record("img0"), jpeg())])
    bad = record("img0")
    bad["annotations"][0]["area"] = 1
    with pytest.raises(ValueError, match="sa_img0, annotation 0: area"):
        write_shard(io.BytesIO(), [(bad, jpeg())])


def test_coco_export_loads_and_evaluates_perfectly_against_itself(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    records = [record("a", 0), record("b", 1)]
    coco_dict = coco_from_records(records)
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco_dict))
    ground_truth = COCO(str(path))
    assert len(ground_truth.getAnnIds()) == 8 and ground_truth.getCatIds() == [1]
    ann = ground_truth.loadAnns(ground_truth.getAnnIds(imgIds=[1]))[0]
    assert ann["bbox"] == [10.0, 5.0, 20.0, 15.0]           # COCO's pixel-extent convention
    detections = ground_truth.loadRes([{"image_id": a["image_id"], "category_id": 1, "segmentation":
                                        a["segmentation"], "score": a["score"]} for a in coco_dict["annotations"]])
    evaluation = COCOeval(ground_truth, detections, iouType="segm")
    evaluation.params.areaRng = [[0, 1e10]] * 4
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)
    assert len(load_coco(coco_dict).getImgIds()) == 2


def test_segment_command_writes_valid_sa1b_json(tmp_path, capsys):
    import cv2
    from pycocotools import mask as mask_utils

    from dataengine.cli import main

    paths = []
    for i, (h, w) in enumerate([(80, 120), (100, 90)]):
        image = np.full((h, w, 3), 40, np.uint8)
        cv2.circle(image, (w // 2, h // 2), 20, (200, 180, 40), -1)
        path = tmp_path / f"photo{i}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    torch.manual_seed(0)
    code = main(["segment", str(paths[0]), paths[1].as_uri(), str(tmp_path / "broken.png"), "--model", "sam_tiny",
                 "--points-per-side", "4", "--out", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 1                                          # one image could not be read
    assert any("broken.png: skipped" in line for line in lines)
    assert sum(" masks in " in line for line in lines) == 2
    for path, (h, w) in zip(paths, [(80, 120), (100, 90)]):
        rec = read_record(out / f"{path.stem}.json")
        validate_sa1b_record(rec, image_size=(h, w))
        assert rec["image"]["file_name"] == path.name
        for ann in rec["annotations"]:
            seg = ann["segmentation"]
            assert mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).shape == (h, w)
