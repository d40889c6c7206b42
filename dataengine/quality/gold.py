"""Gold-standard comparison: output masks against expert masks (SAM paper section 5, "mask quality").

The paper's headline figure is the share of automatic masks with IoU > 0.9 against their professionally
corrected versions (94%; 97% above 0.75). Here outputs are compared with a gold set: each output mask is
scored by its best IoU with any gold mask of the same image (precision-like), each gold mask by its best IoU
with any output (recall), and the class-agnostic COCO mask AP comes from pycocotools' COCOeval.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

RECALL_THRESHOLDS = (0.5, 0.75, 0.9)


@dataclass(frozen=True)
class GoldMinimums:
    """Minimums a run must reach on its gold images; 0 disables a bound."""

    min_precision_at_90: float = 0.0   # share of output masks with IoU > 0.9 to some gold mask
    min_recall_at_75: float = 0.0      # share of gold masks recovered at IoU >= 0.75
    min_mask_ap: float = 0.0           # COCO mask AP (IoU 0.50:0.95)

    def as_dict(self) -> dict:
        """Return the minimums as a plain dict."""
        return asdict(self)


@dataclass
class GoldReport:
    """Gold metrics of a run and whether they met the minimums."""

    images: int
    output_masks: int
    gold_masks: int
    precision_at_90: float
    precision_at_75: float
    recall: dict
    mean_matched_iou: float
    mask_ap: float
    mask_ap50: float
    mask_ap75: float
    passed: bool = True
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Return the report as a JSON-able dict."""
        return asdict(self)


def _iou_matrix(outputs: list[dict], gold: list[dict]):
    """Return the (len(outputs), len(gold)) IoU matrix of COCO RLE segmentations."""
    import numpy as np
    from pycocotools import mask as mask_utils

    if not outputs or not gold:
        return np.zeros((len(outputs), len(gold)))
    dt = [_rle(a["segmentation"]) for a in outputs]
    gt = [_rle(a["segmentation"]) for a in gold]
    return np.asarray(mask_utils.iou(dt, gt, [0] * len(gt)), dtype=float).reshape(len(dt), len(gt))


def _rle(segmentation: dict) -> dict:
    counts = segmentation["counts"]
    return {"size": list(segmentation["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}


def _greedy_matches(ious) -> list[float]:
    """One-to-one matching by descending IoU; return the IoUs of matched pairs (IoU >= 0.5)."""
    import numpy as np

    ious = ious.copy()
    matched = []
    while ious.size and ious.max() >= 0.5:
        i, j = np.unravel_index(int(ious.argmax()), ious.shape)
        matched.append(float(ious[i, j]))
        ious[i, :] = -1
        ious[:, j] = -1
    return matched


def compare_with_gold(outputs: dict[str, list[dict]], gold: dict[str, dict],
                      minimums: GoldMinimums | None = None) -> GoldReport:
    """Compare output annotations per image id with gold SA-1B records per image id; return the report.

    `outputs[image_id]` is a list of SA-1B annotations (COCO RLE `segmentation`, `predicted_iou`);
    `gold[image_id]` is a whole SA-1B record (`image` + `annotations`). Only images present in `gold` count.
    """
    import numpy as np

    image_ids = sorted(i for i in gold if i in outputs)
    best_per_output, best_per_gold, matched = [], [], []
    for image_id in image_ids:
        ious = _iou_matrix(outputs[image_id], gold[image_id]["annotations"])
        if ious.shape[0]:
            best_per_output.extend(ious.max(axis=1) if ious.shape[1] else np.zeros(ious.shape[0]))
        if ious.shape[1]:
            best_per_gold.extend(ious.max(axis=0) if ious.shape[0] else np.zeros(ious.shape[1]))
        matched.extend(_greedy_matches(ious))
    best_out = np.asarray(best_per_output, dtype=float)
    best_gold = np.asarray(best_per_gold, dtype=float)
    ap = coco_mask_ap({i: outputs[i] for i in image_ids}, {i: gold[i] for i in image_ids})
    report = GoldReport(
        images=len(image_ids),
        output_masks=int(best_out.size),
        gold_masks=int(best_gold.size),
        precision_at_90=float((best_out > 0.9).mean()) if best_out.size else 0.0,
        precision_at_75=float((best_out > 0.75).mean()) if best_out.size else 0.0,
        recall={f"{t:.2f}": float((best_gold >= t).mean()) if best_gold.size else 0.0 for t in RECALL_THRESHOLDS},
        mean_matched_iou=float(np.mean(matched)) if matched else 0.0,
        mask_ap=ap[0], mask_ap50=ap[1], mask_ap75=ap[2],
    )
    minimums = minimums or GoldMinimums()
    checks = [("precision_at_90", report.precision_at_90, minimums.min_precision_at_90),
              ("recall@0.75", report.recall["0.75"], minimums.min_recall_at_75),
              ("mask_ap", report.mask_ap, minimums.min_mask_ap)]
    for name, value, minimum in checks:
        if minimum and value < minimum:
            report.failures.append(f"gold {name} = {value:.3f} is below the minimum {minimum:.3f}")
    report.passed = not report.failures
    return report


def coco_mask_ap(outputs: dict[str, list[dict]], gold: dict[str, dict]) -> tuple[float, float, float]:
    """Return class-agnostic COCO mask (AP, AP50, AP75) of outputs against gold, via pycocotools COCOeval."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from dataengine.formats.coco import coco_from_records

    image_ids = sorted(gold)
    if not image_ids or not any(gold[i]["annotations"] for i in image_ids):
        return 0.0, 0.0, 0.0
    gt_dict = coco_from_records([gold[i] for i in image_ids])
    id_of = {img["file_name"]: img["id"] for img in gt_dict["images"]}
    detections = []
    for image_id in image_ids:
        coco_image_id = id_of[gold[image_id]["image"]["file_name"]]
        for ann in outputs.get(image_id, []):
            detections.append({"image_id": coco_image_id, "category_id": 1, "segmentation": ann["segmentation"],
                               "score": float(ann.get("predicted_iou", 1.0))})
    if not detections:
        return 0.0, 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        evaluator.params.maxDets = [10, 100, 1000]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [max(float(s), 0.0) for s in evaluator.stats[:3]]
    return stats[0], stats[1], stats[2]
