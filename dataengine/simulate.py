"""Simulated annotator (the standard click protocol) and the interactive metrics.

The click protocol is RITM's (`isegm/inference/clicker.py`), which SAM's evaluation follows (paper App. D.1):
the first click is at the object's pixel farthest from its boundary; each next click is at the pixel farthest
from the boundary of the error region (false negatives padded by 1 px, false positives likewise): positive if
the false-negative distance is the larger, negative otherwise. Clicked pixels are never clicked again.
"""
from __future__ import annotations

from typing import NamedTuple


class Click(NamedTuple):
    """One click: pixel (x, y) and whether it is positive (inside the object)."""

    x: int
    y: int
    positive: bool


def _distance_inside(region, exclude=None):
    """Return the (H, W) float32 distance of each pixel of `region` to its boundary (the image edge counts
    as boundary through 1 px of padding); pixels in `exclude` get 0."""
    import cv2
    import numpy as np

    padded = cv2.copyMakeBorder(region.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 0)[1:-1, 1:-1]
    if exclude is not None:
        dist[exclude] = 0.0
    return dist


def next_click(gold, pred, clicked=None) -> Click | None:
    """Return the protocol's next click for gold mask `gold` and prediction `pred` ((H, W) bool each), or None
    when there is no error left. `clicked` is an (H, W) bool array of pixels already clicked (excluded)."""
    import numpy as np

    gold = np.asarray(gold, dtype=bool)
    pred = np.zeros_like(gold) if pred is None else np.asarray(pred, dtype=bool)
    # Work inside the bounding box of the error (gold xor pred): outside it both error regions are empty, so
    # the distances (and the row-major order of ties) are those of the whole image.
    error = gold ^ pred
    rows, cols = np.nonzero(error.any(1))[0], np.nonzero(error.any(0))[0]
    if len(rows) == 0:
        return None
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    g, p = gold[y0:y1, x0:x1], pred[y0:y1, x0:x1]
    c = None if clicked is None else np.asarray(clicked, dtype=bool)[y0:y1, x0:x1]
    fn_dist = _distance_inside(g & ~p, c)
    fp_dist = _distance_inside(~g & p, c)
    fn_max, fp_max = float(fn_dist.max()), float(fp_dist.max())
    if fn_max <= 0 and fp_max <= 0:
        return None
    positive = fn_max > fp_max
    dist = fn_dist if positive else fp_dist
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return Click(int(x + x0), int(y + y0), bool(positive))


def first_click(gold) -> Click:
    """Return the first click of the protocol: the pixel of `gold` (H, W) bool farthest from its boundary."""
    import numpy as np

    click = next_click(gold, np.zeros_like(np.asarray(gold, dtype=bool)))
    if click is None:
        raise ValueError("gold mask is empty: no first click")
    return click


# --- the annotator's effort ----------------------------------------------------------------------------------
# Constants of the effort model (seconds). They are this project's assumptions, chosen so that a model that
# needs a handful of clicks lands near the paper's stage-1 figures (34 s per mask at the start, 14 s at the end):
SECONDS_PER_CLICK = 2.0        # look at the mask, move, click, wait for the model
SECONDS_PER_STROKE = 5.0       # one brush or eraser stroke
SECONDS_PER_ACCEPT = 1.0       # accept the mask
SECONDS_PER_IMAGE = 5.0        # open the image and survey it (spread over its masks)
MOVE_ON_AFTER_S = 30.0         # paper §4: once a mask took more than 30 s, the annotator moves to the next image
TARGET_IOU = 0.9               # the annotator stops clicking at this IoU ...
ANNOTATOR_MAX_CLICKS = 10      # ... or after this many clicks, then finishes with strokes
STROKE_MIN_AREA = 4            # px: error specks up to this size are cleaned by neighbouring strokes (free)
STROKE_AREA = 1500             # px: one stroke fixes at most this much of one error region
# Metric protocol (RITM / SAM App. D.1)
MIOU_CLICKS = (1, 2, 3, 5, 9)
NOC_THRESHOLDS = (0.85, 0.90)
NOC_MAX_CLICKS = 20


def count_strokes(pred, gold) -> int:
    """Return the brush/eraser strokes that turn `pred` into `gold` ((H, W) bool): for each connected missed
    region (brush) and false region (eraser) larger than STROKE_MIN_AREA px, ceil(area / STROKE_AREA) strokes."""
    import cv2
    import numpy as np

    pred, gold = np.asarray(pred, bool), np.asarray(gold, bool)
    strokes = 0
    for error in (gold & ~pred, pred & ~gold):
        _, _, stats, _ = cv2.connectedComponentsWithStats(error.astype(np.uint8), connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        strokes += int(np.ceil(areas[areas > STROKE_MIN_AREA] / STROKE_AREA).sum())
    return strokes


def repaint_strokes(gold) -> int:
    """Return the strokes to erase a prediction and paint the object `gold` (H, W) bool from scratch."""
    import numpy as np

    return 1 + count_strokes(np.zeros_like(np.asarray(gold, bool)), gold)


def finishing_strokes(pred, gold) -> int:
    """Return the strokes the annotator spends to finish `pred` into `gold`: correcting it, or, when the mask is
    so wrong that this is cheaper, erasing it and painting the object."""
    return min(count_strokes(pred, gold), repaint_strokes(gold))


def mask_seconds(clicks: int, strokes: int) -> float:
    """Return the seconds one mask takes: clicks, strokes and the accept (image overhead counted apart)."""
    return clicks * SECONDS_PER_CLICK + strokes * SECONDS_PER_STROKE + SECONDS_PER_ACCEPT


def mask_iou(a, b) -> float:
    """Return the IoU of two (H, W) bool masks (1.0 when both are empty)."""
    import numpy as np

    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


# --- one object, any predictor (local or over HTTP) ----------------------------------------------------------

class Annotation(NamedTuple):
    """What the simulated annotator did for one object: its `clicks`, the IoU after each (`ious`), the strokes
    that finished it, its `seconds`, whether clicks alone reached the target, and the submitted (H, W) `mask`."""

    clicks: list
    ious: list
    strokes: int
    seconds: float
    clicks_only: bool
    mask: "object"


def annotate_object(predict_fn, gold_mask, target_iou: float = TARGET_IOU,
                    max_clicks: int = ANNOTATOR_MAX_CLICKS) -> Annotation:
    """Annotate one object with the click protocol, then finish it with strokes so the mask equals `gold_mask`.

    `predict_fn(points (K, 2) float xy, labels (K,) int, mask_input (1, h, w) float logits or None, multimask
    bool) -> (masks (C, H, W) bool, ious (C,), low_res_logits (C, h, w))`: a SamPredictor's `predict` fits, and
    so does a client of the annotation service. Multimask is asked on the first click only; the mask with the
    highest predicted IoU is kept, and its low-res logits are fed back with the next click.
    """
    import numpy as np

    gold = np.asarray(gold_mask, dtype=bool)
    if not gold.any():
        raise ValueError("gold mask is empty: nothing to annotate")
    clicked = np.zeros_like(gold)
    points, labels, ious, clicks = [], [], [], []
    pred, logits = np.zeros_like(gold), None
    for k in range(max_clicks):
        click = next_click(gold, pred, clicked)
        if click is None:
            break
        clicks.append(click)
        clicked[click.y, click.x] = True
        points.append([click.x, click.y])
        labels.append(1 if click.positive else 0)
        masks, scores, low_res = predict_fn(np.asarray(points, np.float32), np.asarray(labels, np.int64),
                                            logits, k == 0)
        best = int(np.argmax(scores))
        pred, logits = np.asarray(masks[best], bool), np.asarray(low_res[best:best + 1], np.float32)
        ious.append(mask_iou(pred, gold))
        if ious[-1] >= target_iou:
            break
    strokes = finishing_strokes(pred, gold)
    return Annotation(clicks=clicks, ious=ious, strokes=strokes, seconds=mask_seconds(len(clicks), strokes),
                      clicks_only=bool(ious) and ious[-1] >= target_iou, mask=gold.copy())


def predictor_fn(predictor):
    """Return a `predict_fn` for `annotate_object` from a `segment_anything.SamPredictor` with its image set."""

    def predict(points, labels, mask_input, multimask):
        return predictor.predict(point_coords=points, point_labels=labels, mask_input=mask_input,
                                 multimask_output=multimask)

    return predict


# --- batched evaluation of a model on gold images ------------------------------------------------------------

class ObjectTrace(NamedTuple):
    """The protocol run on one gold object: IoU after each click (`ious`), and the annotator's stop:
    `annotator_clicks` (target reached or click limit), `strokes` left to finish, `area` of the gold mask."""

    ious: list
    annotator_clicks: int
    strokes: int
    area: int


def sam_batch_predictor(predictor, image):
    """Return a `predict_batch` for `trace_image` from a `segment_anything.SamPredictor` (sets `image`, (H, W, 3)
    uint8 RGB). It computes what `predictor.predict_torch` does but upsamples only the mask with the highest
    predicted IoU (the only one the protocol uses; the other masks come back empty). Logits stay on the device."""
    import numpy as np
    import torch

    predictor.set_image(np.ascontiguousarray(image))

    def predict_batch(points, labels, mask_input, multimask):
        model = predictor.model
        coords = predictor.transform.apply_coords(np.asarray(points, np.float32), predictor.original_size)
        with torch.no_grad():
            sparse, dense = model.prompt_encoder(
                points=(torch.as_tensor(coords, device=predictor.device),
                        torch.as_tensor(np.asarray(labels), device=predictor.device)),
                boxes=None, masks=None if mask_input is None else torch.cat(list(mask_input)))
            low_res, scores = model.mask_decoder(
                image_embeddings=predictor.features, image_pe=model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask)
            # only the mask with the highest predicted IoU is upsampled to the image (the others are not used)
            best = scores.argmax(1)
            rows = torch.arange(len(best), device=best.device)
            chosen = model.postprocess_masks(low_res[rows, best][:, None], predictor.input_size,
                                             predictor.original_size)
        masks = np.zeros((len(best), low_res.shape[1]) + tuple(predictor.original_size), bool)
        masks[rows.cpu().numpy(), best.cpu().numpy()] = (chosen[:, 0] > model.mask_threshold).cpu().numpy()
        return masks, scores.cpu().numpy(), low_res

    return predict_batch


def trace_image(predict_batch, gold_masks, max_clicks: int = NOC_MAX_CLICKS, target_iou: float = TARGET_IOU,
                annotator_max_clicks: int = ANNOTATOR_MAX_CLICKS, batch: int = 64) -> list[ObjectTrace]:
    """Run the click protocol on every gold object of one image at once; return one ObjectTrace per object.

    `predict_batch(points (A, K, 2) xy, labels (A, K), mask_input (A of (1, 1, h, w) logits) or None, multimask)
    -> (masks (A, C, H, W) bool, scores (A, C), low_res (A, C, h, w))` (see `sam_batch_predictor`);
    `gold_masks` (M, H, W) bool. An object gets clicks until it has had max(MIOU_CLICKS) clicks and reached
    max(NOC_THRESHOLDS), or `max_clicks`; objects decode together (one batched call per click index).
    """
    import numpy as np

    golds = np.asarray(gold_masks, dtype=bool)
    m = len(golds)
    need_clicks, need_iou = max(MIOU_CLICKS), max(max(NOC_THRESHOLDS), target_iou)
    points = [[] for _ in range(m)]
    labels = [[] for _ in range(m)]
    clicked = np.zeros_like(golds)
    preds = np.zeros_like(golds)
    logits = [None] * m
    ious = [[] for _ in range(m)]
    stop = [None] * m           # annotator stop: (clicks, strokes)
    active = list(range(m))
    for k in range(max_clicks):
        todo = []
        for i in active:
            click = next_click(golds[i], preds[i], clicked[i])
            if click is None:   # nothing left to correct: the IoU stays where it is
                ious[i].append(ious[i][-1] if ious[i] else 1.0)
                continue
            clicked[i, click.y, click.x] = True
            points[i].append([click.x, click.y])
            labels[i].append(1 if click.positive else 0)
            todo.append(i)
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            masks, scores, low_res = predict_batch(
                np.asarray([points[i] for i in chunk], np.float32), np.asarray([labels[i] for i in chunk]),
                None if k == 0 else [logits[i] for i in chunk], k == 0)
            best = np.asarray(scores).argmax(1)
            for j, i in enumerate(chunk):
                preds[i] = masks[j, best[j]]
                logits[i] = low_res[j:j + 1, best[j]:best[j] + 1]
                ious[i].append(mask_iou(preds[i], golds[i]))
        still = []
        for i in active:
            done_clicks = len(ious[i])
            if stop[i] is None and (ious[i][-1] >= target_iou or done_clicks >= annotator_max_clicks):
                stop[i] = (len(points[i]), finishing_strokes(preds[i], golds[i]))
            if done_clicks < need_clicks or (ious[i][-1] < need_iou and done_clicks < max_clicks):
                still.append(i)
        active = still
        if not active:
            break
    return [ObjectTrace(ious=ious[i], annotator_clicks=stop[i][0] if stop[i] else len(points[i]),
                        strokes=stop[i][1] if stop[i] else finishing_strokes(preds[i], golds[i]),
                        area=int(golds[i].sum())) for i in range(m)]


def summarize(traces_per_image: list[list[ObjectTrace]], target_iou: float = TARGET_IOU) -> dict:
    """Return the interactive metrics of traces grouped by image: mIoU@k, NoC@85/90, effort per mask."""
    import numpy as np

    objects = [t for traces in traces_per_image for t in traces]
    if not objects:
        raise ValueError("no gold objects to summarize")
    metrics: dict = {"images": len(traces_per_image), "objects": len(objects)}

    def iou_at(trace, k):
        return trace.ious[min(k, len(trace.ious)) - 1]

    for k in MIOU_CLICKS:
        metrics[f"miou@{k}"] = round(float(np.mean([iou_at(t, k) for t in objects])), 4)
    for thr in NOC_THRESHOLDS:
        nocs = []
        for t in objects:
            hit = next((i + 1 for i, v in enumerate(t.ious) if v >= thr), None)
            nocs.append(hit if hit is not None else NOC_MAX_CLICKS)
        tag = int(round(thr * 100))
        metrics[f"noc@{tag}"] = round(float(np.mean(nocs)), 3)
        metrics[f"fail@{tag}"] = round(float(np.mean([n >= NOC_MAX_CLICKS and t.ious[-1] < thr
                                                      for n, t in zip(nocs, objects)])), 4)
    # the annotator: objects in order of prominence (largest first); after a mask over 30 s, next image
    seconds, clicks, strokes, clicks_only, annotated, image_seconds = [], [], [], [], 0, 0.0
    for traces in traces_per_image:
        if not traces:
            continue
        image_seconds += SECONDS_PER_IMAGE
        for t in sorted(traces, key=lambda t: -t.area):
            s = mask_seconds(t.annotator_clicks, t.strokes)
            seconds.append(s)
            clicks.append(t.annotator_clicks)
            strokes.append(t.strokes)
            reached = bool(t.ious) and t.ious[min(t.annotator_clicks, len(t.ious)) - 1] >= target_iou
            clicks_only.append(reached)
            annotated += 1
            if s > MOVE_ON_AFTER_S:
                break
    metrics.update({
        "seconds_per_mask": round((sum(seconds) + image_seconds) / max(1, annotated), 2),
        "clicks_per_mask": round(float(np.mean(clicks)), 3),
        "strokes_per_mask": round(float(np.mean(strokes)), 3),
        "clicks_only_share": round(float(np.mean(clicks_only)), 4),
        "masks_annotated": annotated,
        "masks_skipped": len(objects) - annotated,
    })
    return metrics


def evaluate_model(sam, gold_images, log=None) -> dict:
    """Return the interactive metrics of `sam` over `gold_images`, an iterable of (name, image (H, W, 3) uint8,
    gold masks (M, H, W) bool)."""
    import time

    from segment_anything import SamPredictor

    from dataengine.model.sam2_loading import is_sam2

    if is_sam2(sam):    # SAM 2: its own prompt encoder, decoder and square input frame
        from dataengine.model.sam2_predictor import sam2_batch_predictor

        def batch_predictor(image):
            return sam2_batch_predictor(sam, image)
    else:
        predictor = SamPredictor(sam)

        def batch_predictor(image):
            return sam_batch_predictor(predictor, image)
    traces, t0 = [], time.time()
    for n, (name, image, golds) in enumerate(gold_images, 1):
        traces.append(trace_image(batch_predictor(image), golds) if len(golds) else [])
        if log and n % 20 == 0:
            log(f"evaluated {n} images ({time.time() - t0:.0f} s)")
    metrics = summarize(traces)
    metrics["eval_seconds"] = round(time.time() - t0, 1)
    return metrics


def read_gold_dir(folder):
    """Yield (image_id, image (H, W, 3) uint8 RGB, gold masks (M, H, W) bool) for each `<id>.json` + image in a
    folder (the layout `dataengine synth` writes), in name order."""
    import json
    from pathlib import Path

    import cv2
    import numpy as np

    from dataengine.masks import coco_decode

    folder = Path(folder)
    records = sorted(folder.glob("*.json"))
    if not records:
        raise FileNotFoundError(f"gold folder {folder}: no <id>.json records")
    for path in records:
        record = json.loads(path.read_text())
        info = record["image"]
        image_path = folder / info["file_name"]
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"gold record {path.name}: image {image_path} is missing or unreadable")
        image = np.ascontiguousarray(image[..., ::-1])
        masks = [coco_decode(a["segmentation"]) for a in record["annotations"]]
        for a, mk in zip(record["annotations"], masks):
            if list(mk.shape) != list(image.shape[:2]):
                raise ValueError(f"gold record {path.name}: annotation {a.get('id')} has mask size "
                                 f"{list(mk.shape)}, image is {image.shape[0]}x{image.shape[1]}")
        yield info["image_id"], image, (np.stack(masks) if masks else np.zeros((0,) + image.shape[:2], bool))
