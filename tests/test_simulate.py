"""The click protocol, the annotator's effort and the interactive metrics on hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest

from dataengine import simulate
from dataengine.simulate import annotate_object, count_strokes, next_click, summarize, trace_image


def _rect(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _oracle(golds):
    """A perfect batched predictor: the gold mask under each prompt's first click, three times."""
    golds = np.asarray(golds)

    def predict_batch(points, labels, mask_input, multimask):
        masks, low = [], []
        for row in points:
            x, y = int(row[0][0]), int(row[0][1])
            owner = int(np.argmax(golds[:, y, x]))
            masks.append(np.stack([golds[owner]] * 3))
            low.append(np.zeros((3, 4, 4), np.float32))
        return np.stack(masks), np.tile([0.5, 0.9, 0.7], (len(points), 1)), np.stack(low)

    return predict_batch


def _empty(golds):
    shape = golds.shape[1:]

    def predict_batch(points, labels, mask_input, multimask):
        n = len(points)
        return np.zeros((n, 3) + shape, bool), np.ones((n, 3)), np.zeros((n, 3, 4, 4), np.float32)

    return predict_batch


def test_first_click_is_the_point_farthest_from_the_boundary():
    gold = _rect(40, 60, 10, 31, 5, 26)          # 21 x 21 square: its centre is row 20, column 15
    click = next_click(gold, np.zeros_like(gold))
    assert click.positive and (click.y, click.x) == (20, 15)
    disc = np.zeros((40, 60), np.uint8)
    import cv2
    cv2.circle(disc, (40, 22), 9, 1, -1)
    click = next_click(disc.astype(bool), None)
    assert (click.x, click.y) == (40, 22)


def test_next_click_goes_to_the_centre_of_the_larger_error_region():
    gold = _rect(50, 50, 0, 50, 0, 30)            # object: the left 30 columns
    pred = _rect(50, 50, 0, 50, 0, 10)            # prediction: only 10 of them -> missed band, columns 10..29
    click = next_click(gold, pred)
    assert click.positive and 18 <= click.x <= 20 and 9 <= click.y <= 40   # the band's medial column
    pred = _rect(50, 50, 0, 50, 0, 48)            # prediction spills over: false band of columns 30..47
    click = next_click(gold, pred)
    assert not click.positive and 37 <= click.x <= 40


def test_image_edge_counts_as_boundary_and_clicked_pixels_are_skipped():
    gold = _rect(9, 9, 0, 9, 0, 9)                # whole image: the padding makes the centre the farthest
    click = next_click(gold, np.zeros_like(gold))
    assert (click.x, click.y) == (4, 4)
    clicked = np.zeros_like(gold)
    clicked[4, 4] = True
    again = next_click(gold, np.zeros_like(gold), clicked)
    assert (again.x, again.y) != (4, 4)
    assert next_click(gold, gold) is None


def test_perfect_predictor_scores_miou_one_and_noc_one():
    golds = np.stack([_rect(64, 64, 5, 30, 5, 30), _rect(64, 64, 40, 60, 10, 50), _rect(64, 64, 2, 8, 40, 62)])
    traces = trace_image(_oracle(golds), golds)
    metrics = summarize([traces])
    for k in simulate.MIOU_CLICKS:
        assert metrics[f"miou@{k}"] == 1.0
    assert metrics["noc@85"] == 1.0 and metrics["noc@90"] == 1.0
    assert metrics["clicks_per_mask"] == 1.0 and metrics["strokes_per_mask"] == 0.0
    assert metrics["clicks_only_share"] == 1.0
    expected = (3 * simulate.mask_seconds(1, 0) + simulate.SECONDS_PER_IMAGE) / 3
    assert metrics["seconds_per_mask"] == pytest.approx(expected, abs=0.01)


def test_empty_predictor_fails_with_noc_twenty_and_strokes_finish_the_mask():
    golds = np.stack([_rect(64, 64, 40, 60, 52, 62), _rect(64, 64, 0, 64, 0, 50)])   # 200 px and 3200 px
    traces = trace_image(_empty(golds), golds)
    metrics = summarize([traces])
    assert metrics["noc@85"] == 20 and metrics["noc@90"] == 20
    assert metrics["fail@90"] == 1.0 and metrics["miou@1"] == 0.0 and metrics["miou@9"] == 0.0
    assert all(len(t.ious) == simulate.NOC_MAX_CLICKS for t in traces)
    assert metrics["clicks_per_mask"] == simulate.ANNOTATOR_MAX_CLICKS
    # the larger object comes first: 10 clicks and 3 strokes take 36 s > 30 s, so the smaller one is skipped
    assert metrics["strokes_per_mask"] == 3 and metrics["clicks_only_share"] == 0.0
    assert metrics["masks_annotated"] == 1 and metrics["masks_skipped"] == 1


def test_annotate_object_with_a_single_object_predictor_submits_the_gold_mask():
    gold = _rect(48, 48, 10, 40, 8, 30)
    calls = []

    def predict_fn(points, labels, mask_input, multimask):
        calls.append((len(points), multimask, mask_input is not None))
        grown = _rect(48, 48, 10, 40, 8, 30 + max(0, 6 - 2 * len(points)))   # each click removes 2 false columns
        return np.stack([np.zeros_like(gold), grown, grown]), np.array([0.1, 0.8, 0.3]), np.zeros((3, 4, 4))

    result = annotate_object(predict_fn, gold, target_iou=1.0, max_clicks=5)
    assert calls[0] == (1, True, False) and all(c[1] is False and c[2] for c in calls[1:])
    assert result.ious[-1] == 1.0 and result.clicks_only and result.strokes == 0
    assert len(result.clicks) == 3 and result.ious == sorted(result.ious)
    assert np.array_equal(result.mask, gold)
    assert result.seconds == simulate.mask_seconds(3, 0)


def test_strokes_count_error_regions_and_ignore_specks():
    gold = _rect(100, 100, 0, 100, 0, 50)
    pred = gold.copy()
    pred[0:2, 0:2] = False                         # 4 px speck: free
    assert count_strokes(pred, gold) == 0
    pred[50:60, 60:70] = True                      # 100 px false region: one stroke
    pred[80:100, 0:50] = False                     # 1000 px missed region: one stroke
    assert count_strokes(pred, gold) == 2
    pred[:, 50:100] = True                         # 5000 px false half: ceil(5000 / 1500) = 4 strokes
    assert count_strokes(pred, gold) == 1 + int(np.ceil(5000 / simulate.STROKE_AREA))


def test_batched_trace_matches_the_single_object_annotator_on_a_real_model():
    torch = pytest.importorskip("torch")
    from segment_anything import SamPredictor

    from dataengine.model.tiny import build_sam_tiny
    from dataengine.synth import render_scene

    torch.manual_seed(0)
    sam = build_sam_tiny()
    scene = render_scene(3)
    golds = scene.masks[:3]
    predictor = SamPredictor(sam)
    traces = trace_image(simulate.sam_batch_predictor(predictor, scene.image), golds, max_clicks=4)
    for gold, trace in zip(golds, traces):
        single = annotate_object(simulate.predictor_fn(predictor), gold, target_iou=1.01, max_clicks=4)
        assert single.ious == pytest.approx(trace.ious[:len(single.ious)], abs=1e-6)


def test_next_click_equals_the_whole_image_reference_on_random_masks():
    import cv2

    def reference(gold, pred, clicked):
        def dist(region):
            d = cv2.distanceTransform(np.pad(region.astype(np.uint8), 1), cv2.DIST_L2, 0)[1:-1, 1:-1]
            d[clicked] = 0
            return d
        fn, fp = dist(gold & ~pred), dist(~gold & pred)
        if max(fn.max(), fp.max()) <= 0:
            return None
        d = fn if fn.max() > fp.max() else fp
        y, x = np.unravel_index(int(np.argmax(d)), d.shape)
        return (int(x), int(y), bool(fn.max() > fp.max()))

    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = rng.integers(5, 60, 2)
        gold = cv2.GaussianBlur(rng.random((h, w)), (0, 0), 2) > 0.5
        pred = cv2.GaussianBlur(rng.random((h, w)), (0, 0), 2) > 0.5
        clicked = rng.random((h, w)) < 0.05
        click = next_click(gold, pred, clicked)
        assert (None if click is None else tuple(click)) == reference(gold, pred, clicked)
