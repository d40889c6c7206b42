"""Synthetic scenes: deterministic by seed, SA-1B records that decode to the drawn masks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dataengine import synth
from dataengine.cli import main


def test_same_seed_gives_the_same_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    synth.write_scenes(a, 2, seed=7)
    synth.write_scenes(b, 2, seed=7)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and len(names) == 4
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    other = synth.render_scene(8)
    assert not np.array_equal(other.image[:50, :50], synth.render_scene(7).image[:50, :50])


def test_records_follow_the_sa1b_schema_and_decode_to_the_gold_masks(tmp_path):
    from pycocotools import mask as mask_utils

    assert main(["synth", "--n", "2", "--seed", "3", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "synth_00000003.json").read_text())
    scene = synth.render_scene(3)
    h, w = scene.image.shape[:2]
    assert record["image"] == {"image_id": "synth_00000003", "width": w, "height": h,
                               "file_name": "synth_00000003.jpg"}
    assert 4 <= len(record["annotations"]) == len(scene.masks)
    for ann, mask in zip(record["annotations"], scene.masks):
        assert set(ann) == {"id", "segmentation", "bbox", "area", "predicted_iou", "stability_score", "crop_box",
                            "point_coords"}
        seg = ann["segmentation"]
        assert seg["size"] == [h, w] and isinstance(seg["counts"], str)
        decoded = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
        assert np.array_equal(decoded, mask)
        assert ann["area"] == int(mask.sum()) >= synth.MIN_MASK_AREA
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]   # max - min
        x, y = ann["point_coords"][0]
        assert mask[y, x]
        assert ann["crop_box"] == [0, 0, w, h] and ann["predicted_iou"] == 1.0 == ann["stability_score"]
    import cv2
    image = cv2.imread(str(tmp_path / "synth_00000003.jpg"))
    assert image.shape == (h, w, 3)


def test_scenes_have_occlusion_parts_and_sa1b_like_sizes():
    fractions, kinds, sizes = [], [], set()
    for seed in range(12):
        scene = synth.render_scene(seed)
        h, w = scene.image.shape[:2]
        sizes.add((h, w))
        assert synth.SIDE_RANGE[0] <= min(h, w) and max(h, w) <= synth.SIDE_RANGE[1]
        fractions += list(scene.masks.sum((1, 2)) / (h * w))
        kinds += scene.kinds
        assert scene.image.std() > 10                      # textured, not flat
    fractions = np.asarray(fractions)
    assert len(sizes) == 12                                # sizes and aspect ratios vary
    assert (fractions < 0.01).mean() > 0.3 and (fractions > 0.1).any()
    assert any(k.startswith("part:") for k in kinds) and any(k.startswith("subpart:") for k in kinds)
    assert any(k in ("bar", "ring") for k in kinds)


def test_parts_lie_inside_their_whole_and_wholes_keep_their_parts():
    for seed in range(12):
        scene = synth.render_scene(seed)
        for i, kind in enumerate(scene.kinds):
            if kind.startswith("part:"):
                containing = [j for j in range(i) if (scene.masks[j] & scene.masks[i]).sum() == scene.masks[i].sum()]
                assert containing, f"seed {seed}: part {i} is not inside any earlier mask"


def test_training_renders_at_the_model_frame():
    scene = synth.render_scene(5, long_side=256)
    assert max(scene.image.shape[:2]) == 256 and scene.masks.shape[1:] == scene.image.shape[:2]


def test_bad_arguments_are_refused_with_a_clear_message(tmp_path):
    with pytest.raises(SystemExit, match="--n"):
        main(["synth", "--n", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="seed"):
        main(["synth", "--n", "1", "--seed", "1000000000", "--out", str(tmp_path)])


def test_cells_domain_is_deterministic_with_nuclei_inside_their_cells(tmp_path):
    a = synth.render_scene(4, domain="cells")
    b = synth.render_scene(4, domain="cells")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    kinds = []
    for seed in range(6):
        scene = synth.render_scene(seed, domain="cells")
        kinds += scene.kinds
        assert not np.array_equal(scene.image, synth.render_scene(seed).image)   # another family of images
        for i, kind in enumerate(scene.kinds):
            if kind.startswith(("part:", "subpart:")):
                assert any((scene.masks[j] & scene.masks[i]).sum() == scene.masks[i].sum() for j in range(i)), \
                    f"seed {seed}: {kind} {i} is not inside an earlier mask"
    assert {k.split(":")[0] for k in kinds} == {"cell", "part", "subpart"}
    assert main(["synth", "--n", "1", "--seed", "4", "--domain", "cells", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "cells_00000004.json").read_text())
    assert len(record["annotations"]) == len(a.masks)
    with pytest.raises(ValueError, match="unknown scene domain 'dogs'"):
        synth.render_scene(1, domain="dogs")


def test_photo_textures_change_the_pixels_and_keep_the_masks():
    from dataengine.photos import HELD_OUT_PHOTOS, TEXTURE_PHOTOS

    plain = synth.render_scene(11, long_side=256)
    photo = synth.render_scene(11, long_side=256, photo_share=0.8)
    assert np.array_equal(plain.masks, photo.masks) and plain.kinds == photo.kinds
    assert np.abs(plain.image.astype(int) - photo.image.astype(int)).mean() > 5
    again = synth.render_scene(11, long_side=256, photo_share=0.8)
    assert np.array_equal(photo.image, again.image)                      # deterministic by seed
    assert not set(HELD_OUT_PHOTOS) & set(TEXTURE_PHOTOS)               # never the photographs we are judged on
    with pytest.raises(ValueError, match="photo_share"):
        synth.render_scene(11, long_side=256, photo_share=1.5)


def test_instance_map_labels_whole_objects_and_not_their_parts():
    from dataengine.model.training.data import instance_map

    scene = next(s for s in (synth.render_scene(seed, long_side=256) for seed in range(40))
                 if any(k.startswith("part:") for k in s.kinds))
    ids = instance_map(scene.masks, scene.kinds)
    wholes = [m for m, k in zip(scene.masks, scene.kinds) if ":" not in k]
    assert ids.max() == len(wholes)
    for k, mask in enumerate(wholes, start=1):
        assert np.array_equal(ids == k, mask)                            # parts are inside their whole's label
    assert (ids == 0).sum() == (~np.any(np.stack(wholes), 0)).sum()
