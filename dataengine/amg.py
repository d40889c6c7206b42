"""Fully automatic mask generation (stage 3 of the SAM data engine; paper section 4 and appendix B).

`MaskGenerator` is a drop-in for the official `segment_anything.SamAutomaticMaskGenerator`: the same settings
with the same meaning, the same algorithm, the same records in the same order, plus the paper's rule the official
code lacks (`max_mask_area_ratio`: drop masks covering at least that share of the image; SA-1B used 0.95).

The algorithm, per crop of the image (the whole image, then the zoomed crop layers):
  1. embed the crop once; prompt the decoder with a grid of foreground points, three masks per point;
  2. keep masks with predicted IoU > pred_iou_thresh and stability >= stability_score_thresh (stability: the
     IoU of the mask thresholded at +offset and at -offset around the logit threshold);
  3. drop masks whose box lies within 20 px of an inner crop edge; box NMS (box_nms_thresh) ranked by
     predicted IoU.
Then box NMS across crops (crop_nms_thresh; smaller crops win), optional hole/island cleanup
(min_mask_region_area, followed by NMS preferring untouched masks), and the records.

Why it is faster than the reference (same output): the reference upsamples every candidate's logits to full
resolution before the IoU filter. Here the IoU filter runs on the transformer's output tokens, before any
mask is even upscaled (`model/decoding.py`); stability, boxes, areas and RLEs of the survivors come from a
column-resized form of their logits, never the full-resolution map (`model/upsampling.py`, `masks.py`); and
per-image decoder work is shared by all prompts. Memory is bounded by `points_per_batch` and the upscaling
budget, whatever the number of points; only RLEs, boxes and scores of kept masks accumulate.
"""
from __future__ import annotations

from dataclasses import dataclass

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")

#: Settings of the official generator's constructor, with its defaults (SamAutomaticMaskGenerator.__init__).
OFFICIAL_DEFAULTS = {
    "points_per_side": 32,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "stability_score_offset": 1.0,
    "box_nms_thresh": 0.7,
    "crop_n_layers": 0,
    "crop_nms_thresh": 0.7,
    "crop_overlap_ratio": 512 / 1500,
    "crop_n_points_downscale_factor": 1,
    "point_grids": None,
    "min_mask_region_area": 0,
    "output_mode": "binary_mask",
}
DEFAULTS = {**OFFICIAL_DEFAULTS, "points_per_batch": None, "max_mask_area_ratio": None}

#: Named settings. `sa1b`: the SA-1B generation settings (paper appendix B): a 32x32 grid on the image plus
#: 2x2 and 4x4 crops with 16x16 and 8x8 grids, IoU > 0.88, stability >= 0.95, NMS 0.7 within and across crops,
#: drop masks covering >= 95% of the image, fill holes and remove islands under 100 px, COCO RLE output.
PRESETS = {
    "official": {key: OFFICIAL_DEFAULTS[key] for key in OFFICIAL_DEFAULTS if key != "points_per_batch"},
    "sa1b": {
        "points_per_side": 32,
        "pred_iou_thresh": 0.88,
        "stability_score_thresh": 0.95,
        "stability_score_offset": 1.0,
        "box_nms_thresh": 0.7,
        "crop_n_layers": 2,
        "crop_nms_thresh": 0.7,
        "crop_overlap_ratio": 512 / 1500,
        "crop_n_points_downscale_factor": 2,
        "min_mask_region_area": 100,
        "max_mask_area_ratio": 0.95,
        "output_mode": "coco_rle",
    },
    # `sam_tiny`: thresholds that suit the CPU bootstrap model, whose predicted IoUs are low and carry little
    # signal (median 0.29, correlation 0.18 with the best gold IoU; bench/amg_sweep.py and docs/benchmarks.md).
    # Re-derive with the sweep after retraining.
    "sam_tiny": {
        "points_per_side": 32,
        "pred_iou_thresh": 0.35,
        "stability_score_thresh": 0.8,
        "stability_score_offset": 1.0,
        "box_nms_thresh": 0.7,
        "crop_n_layers": 0,
        "min_mask_region_area": 25,
        "max_mask_area_ratio": 0.95,
        "output_mode": "coco_rle",
    },
}

UPSCALE_BUDGET = 1 << 24     # column-form logits (floats) processed at once: bounds memory on huge images
EDGE_TOLERANCE = 20.0        # px: a box this close to an inner crop edge is cut by the crop (official value)


@dataclass
class MaskSet:
    """Kept masks of a crop or image: RLEs (list of uncompressed dicts) and (N, ...) tensors, image frame."""

    rles: list
    boxes: object          # (N, 4) int64 XYXY, inclusive max
    iou: object            # (N,) float32 predicted IoU
    stability: object      # (N,) float32
    points: object         # (N, 2) float64 prompt point (x, y)
    crop_boxes: object     # (N, 4) int64 XYXY crop that produced the mask

    def __len__(self) -> int:
        return len(self.rles)

    def take(self, index) -> "MaskSet":
        """Return the masks at `index` (int64 tensor), in that order."""
        rows = index.tolist()
        return MaskSet([self.rles[i] for i in rows], self.boxes[index], self.iou[index],
                       self.stability[index], self.points[index], self.crop_boxes[index])

    @staticmethod
    def concat(parts: list, device) -> "MaskSet":
        """Concatenate mask sets (an empty list gives an empty set on `device`)."""
        import torch

        parts = [p for p in parts if len(p)]
        if not parts:
            z = torch.zeros(0, dtype=torch.long, device=device)
            return MaskSet([], z.reshape(0, 4), z.float(), z.float(), z.double().reshape(0, 2), z.reshape(0, 4))
        return MaskSet([r for p in parts for r in p.rles],
                       *(torch.cat([getattr(p, f) for p in parts])
                         for f in ("boxes", "iou", "stability", "points", "crop_boxes")))


def resolve_settings(preset: str | None = None, **settings) -> dict:
    """Return the full settings: defaults, then the preset, then `settings`; raise on unknown names or values."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(sorted(PRESETS))}")
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"unknown mask generator setting(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(DEFAULTS))}")
    resolved = {**DEFAULTS, **(PRESETS[preset] if preset else {}), **settings}
    if settings.get("point_grids") is not None and "points_per_side" not in settings:
        resolved["points_per_side"] = None
    if (resolved["points_per_side"] is None) == (resolved["point_grids"] is None):
        raise ValueError("exactly one of points_per_side and point_grids must be given")
    if resolved["output_mode"] not in OUTPUT_MODES:
        raise ValueError(f"output_mode {resolved['output_mode']!r}: expected one of {', '.join(OUTPUT_MODES)}")
    ratio = resolved["max_mask_area_ratio"]
    if ratio is not None and not 0 < ratio <= 1:
        raise ValueError(f"max_mask_area_ratio {ratio!r}: expected a share of the image in (0, 1], or None")
    for name in ("points_per_side", "points_per_batch"):
        value = resolved[name]
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} {value!r}: expected a positive integer")
    if not isinstance(resolved["crop_n_layers"], int) or resolved["crop_n_layers"] < 0:
        raise ValueError(f"crop_n_layers {resolved['crop_n_layers']!r}: expected an integer >= 0")
    return resolved


class GridMaskGenerator:
    """The shape both automatic generators share (SAM's `MaskGenerator`, SAM 2's `Sam2MaskGenerator`).

    Per crop of the image (the whole image, then the zoomed crop layers): embed the crop, decode its point grid
    `points_per_batch` points at a time, keep the masks that pass the per-mask filters, box NMS within the crop;
    then box NMS across crops (smaller crops win), `_after_crops`, and the records. A subclass gives its settings
    and decoder to `__init__` and implements `_embed_crop` (embed a crop, scale its grid to the model frame) and
    `_process_batch` (decode a batch of points into a `MaskSet`, usually through `_keep`).
    """

    def __init__(self, model, settings: dict, decoder):
        from segment_anything.utils.amg import build_all_layer_point_grids

        from dataengine.model.device import default_points_per_batch, model_device

        self.model = model
        self.settings = settings
        for name, value in self.settings.items():
            setattr(self, name, value)
        self.device = model_device(model)
        if self.points_per_batch is None:
            self.points_per_batch = default_points_per_batch(self.device)
        if self.points_per_side is not None:
            self.point_grids = build_all_layer_point_grids(
                self.points_per_side, self.crop_n_layers, self.crop_n_points_downscale_factor)
        if len(self.point_grids) < self.crop_n_layers + 1:
            raise ValueError(f"point_grids has {len(self.point_grids)} grid(s); crop_n_layers="
                             f"{self.crop_n_layers} needs {self.crop_n_layers + 1}")
        self.decoder = decoder

    def generate(self, image) -> list[dict]:
        """Return the mask records of an (H, W, 3) uint8 RGB image (see the class docstring)."""
        import torch
        from segment_anything.utils.amg import generate_crop_boxes
        from torchvision.ops import box_area

        from dataengine.masks import box_nms
        from dataengine.model.embeddings import check_image

        check_image(image)
        crop_boxes, layers = generate_crop_boxes(image.shape[:2], self.crop_n_layers, self.crop_overlap_ratio)
        with torch.no_grad(), self._generation_context():
            masks = MaskSet.concat([self._process_crop(image, box, layer)
                                    for box, layer in zip(crop_boxes, layers)], self.device)
            if len(crop_boxes) > 1 and len(masks):
                prefer_small_crops = 1 / box_area(masks.crop_boxes)
                masks = masks.take(box_nms(masks.boxes, prefer_small_crops, self.crop_nms_thresh))
            masks = self._after_crops(masks, image.shape[:2])
        return self._records(masks)

    def _generation_context(self):
        """Return the context the whole generation runs in (none by default)."""
        import contextlib

        return contextlib.nullcontext()

    def _after_crops(self, masks: MaskSet, image_size) -> MaskSet:
        """Return the image's masks after the cross-crop NMS (as they are by default)."""
        return masks

    def _embed_crop(self, crop, crop_points):
        """Embed `crop` for the decoder; return (crop points (P, 2) tensor in the crop frame, a tuple of (P, ...)
        tensors per point that `_process_batch` takes first, sliced to the batch)."""
        raise NotImplementedError

    def _process_batch(self, *per_point_and_rest) -> MaskSet:
        """Decode one batch of points: `(*per_point, image points, crop_box, image_size)` -> kept masks."""
        raise NotImplementedError

    def _process_crop(self, image, crop_box, layer: int) -> MaskSet:
        """Embed one crop, decode its point grid batch by batch, NMS within the crop."""
        import numpy as np
        import torch

        from dataengine.masks import box_nms

        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        crop_points, per_point = self._embed_crop(crop, self.point_grids[layer] * np.array(crop.shape[:2])[None, ::-1])
        image_points = crop_points + torch.tensor([[x0, y0]], device=self.device)
        parts = []
        for start in range(0, len(image_points), self.points_per_batch):
            batch = slice(start, start + self.points_per_batch)
            parts.append(self._process_batch(*(t[batch] for t in per_point), image_points[batch], crop_box,
                                             image.shape[:2]))
        masks = MaskSet.concat(parts, self.device)
        if len(masks):
            masks = masks.take(box_nms(masks.boxes, masks.iou, self.box_nms_thresh))
        return masks

    def _keep(self, logits, threshold: float, iou, points, crop_box, image_size) -> MaskSet:
        """Stability filter, RLE/box/area, crop-edge filter and area rule for a chunk of candidates, given their
        `UpscaledLogits` and the logit threshold of a mask."""
        import torch

        from dataengine.masks import column_changes_to_positions, encode_changes, is_box_near_crop_edge

        offset = self.stability_score_offset
        high, low = logits.count_above(threshold + offset, threshold - offset)
        stability = high / low
        if self.stability_score_thresh > 0:
            stable = torch.nonzero(stability >= self.stability_score_thresh).flatten()
            logits, stability, iou, points = logits.select(stable), stability[stable], iou[stable], points[stable]
        if logits.count == 0:
            return MaskSet.concat([], self.device)
        within, top, bottom = logits.column_changes(threshold)
        ids, positions = column_changes_to_positions(within, top, bottom, crop_box, image_size)
        encoded = encode_changes(ids, positions, logits.count, image_size)
        # an empty mask's box is [0, 0, 0, 0] in the crop's frame (the official convention), i.e. the crop origin
        x0, y0 = crop_box[:2]
        origin = torch.tensor([x0, y0, x0, y0], dtype=torch.long, device=encoded.boxes.device)
        boxes = torch.where((encoded.areas == 0)[:, None], origin, encoded.boxes)
        height, width = image_size
        keep = ~is_box_near_crop_edge(boxes, crop_box, [0, 0, width, height], atol=EDGE_TOLERANCE)
        if self.max_mask_area_ratio is not None:
            keep &= encoded.areas < self.max_mask_area_ratio * height * width
        keep = torch.nonzero(keep).flatten()
        crop_boxes = torch.tensor([list(crop_box)], dtype=torch.long, device=self.device).expand(len(keep), 4)
        return MaskSet([encoded.rles[i] for i in keep.tolist()], boxes[keep], iou[keep],
                       stability[keep], points[keep], crop_boxes)

    def _records(self, masks: MaskSet) -> list[dict]:
        """Return the official records of a mask set, in its order."""
        from dataengine.masks import box_xyxy_to_xywh, coco_encode_rle, rle_area, rle_to_mask

        encode = {"coco_rle": coco_encode_rle, "binary_mask": rle_to_mask}.get(self.output_mode, lambda rle: rle)
        return [{"segmentation": encode(rle), "area": rle_area(rle), "bbox": box_xyxy_to_xywh(box),
                 "predicted_iou": iou, "point_coords": [point], "stability_score": stability,
                 "crop_box": box_xyxy_to_xywh(crop)}
                for rle, box, iou, point, stability, crop in zip(
                    masks.rles, masks.boxes.tolist(), masks.iou.tolist(), masks.points.tolist(),
                    masks.stability.tolist(), masks.crop_boxes.tolist())]


class MaskGenerator(GridMaskGenerator):
    """Automatic mask generator: `MaskGenerator(model, preset=None, **settings).generate(image)`.

    `model` is a `segment_anything.modeling.Sam`; `settings` are the official `SamAutomaticMaskGenerator`
    keywords (same meaning) plus `max_mask_area_ratio` (None = off). `points_per_batch=None` picks a batch size
    for the model's device. `generate` takes an (H, W, 3) uint8 RGB array and returns one dict per mask with the
    official keys, in the official order: segmentation, area, bbox (XYWH, w = x_max - x_min), predicted_iou,
    point_coords ([[x, y]]), stability_score, crop_box (XYWH).
    """

    def __init__(self, model, preset: str | None = None, **settings):
        from dataengine.model.decoding import PointDecoder

        super().__init__(model, resolve_settings(preset, **settings), PointDecoder(model))

    def _after_crops(self, masks: MaskSet, image_size) -> MaskSet:
        """Fill holes and remove islands when `min_mask_region_area` asks for it."""
        if self.min_mask_region_area > 0 and len(masks):
            return self._clean_small_regions(masks, image_size)
        return masks

    def _embed_crop(self, crop, crop_points):
        """Embed the crop (`compute_embedding`); the points in the model frame and their sparse embeddings."""
        import torch
        from segment_anything.utils.transforms import ResizeLongestSide

        from dataengine.model.embeddings import compute_embedding

        self._embedding = compute_embedding(self.model, crop)
        self.decoder.set_features(self._embedding.features)
        model_points = ResizeLongestSide(self.model.image_encoder.img_size).apply_coords(crop_points, crop.shape[:2])
        model_points = torch.as_tensor(model_points, device=self.device)
        return torch.as_tensor(crop_points, device=self.device), (self.decoder.embed_points(model_points),
                                                                  model_points)

    def _process_batch(self, sparse, model_points, points, crop_box, image_size) -> MaskSet:
        """Decode one batch of point prompts and keep the masks that pass every per-mask filter."""
        import torch

        from dataengine.model.device import autocast

        with autocast(self.device):                                # bf16 on CUDA, exact fp32 on the CPU
            decoded = self.decoder.decode(sparse, model_points)
            iou = decoded.iou.float().flatten()                   # point-major, then the 3 masks of a point
            if self.pred_iou_thresh > 0:
                candidates = torch.nonzero(iou > self.pred_iou_thresh).flatten()
            else:
                candidates = torch.arange(len(iou), device=iou.device)
            if len(candidates) == 0:
                return MaskSet.concat([], self.device)
            low_res = self.decoder.mask_logits(decoded, candidates // 3, candidates % 3).float()
        rows, width = self._embedding.input_size[0], image_size[1]
        chunk = max(1, UPSCALE_BUDGET // max(1, rows * width))
        parts = []
        for index in torch.split(torch.arange(len(candidates), device=iou.device), chunk):
            parts.append(self._filter_and_encode(low_res[index], iou[candidates[index]],
                                                 points[candidates[index] // 3], crop_box, image_size))
        return MaskSet.concat(parts, self.device)

    def _filter_and_encode(self, low_res, iou, points, crop_box, image_size) -> MaskSet:
        """Upscale a chunk of candidates' logits (padding cut off, to the crop) and keep those that pass."""
        from dataengine.model.upsampling import UpscaledLogits

        x0, y0, x1, y1 = crop_box
        logits = UpscaledLogits(low_res, self._embedding.input_size, (y1 - y0, x1 - x0),
                                self.model.image_encoder.img_size)
        return self._keep(logits, self.model.mask_threshold, iou, points, crop_box, image_size)

    def _clean_small_regions(self, masks: MaskSet, image_size) -> MaskSet:
        """Fill holes and remove islands under min_mask_region_area, then NMS preferring untouched masks."""
        import torch

        from dataengine.masks import box_nms, clean_mask_regions, masks_to_rles, rle_area, rle_to_mask

        rles, boxes, untouched = list(masks.rles), masks.boxes.clone(), []
        empty = torch.tensor([rle_area(rle) == 0 for rle in rles], device=boxes.device)
        nms_boxes = torch.where(empty[:, None], torch.zeros_like(boxes), boxes)   # boxes of the masks as they are
        for i, rle in enumerate(masks.rles):
            cleaned, changed = clean_mask_regions(rle_to_mask(rle), self.min_mask_region_area)
            untouched.append(0.0 if changed else 1.0)
            if changed:
                encoded = masks_to_rles(torch.from_numpy(cleaned)[None])
                rles[i], boxes[i] = encoded.rles[0], encoded.boxes[0].to(boxes.device)
                nms_boxes[i] = boxes[i]
        keep = box_nms(nms_boxes, torch.tensor(untouched, device=boxes.device),
                       max(self.box_nms_thresh, self.crop_nms_thresh))
        updated = MaskSet(rles, boxes, masks.iou, masks.stability, masks.points, masks.crop_boxes)
        return updated.take(keep)


def match_records(reference: list[dict], candidate: list[dict], min_iou: float = 0.99,
                  score_tolerance: float = 1e-3) -> dict:
    """Compare two generators' outputs (records with COCO-RLE or uncompressed-RLE segmentations).

    Each mask of either list must match a mask of the other with mask IoU >= `min_iou` whose predicted_iou and
    stability_score agree within `score_tolerance`. Returns {"matched": bool, "reference": n, "candidate": m,
    "unmatched_reference": [...indices], "unmatched_candidate": [...], "worst_iou": float}.
    """
    import numpy as np
    from pycocotools import mask as mask_utils

    def compressed(records):
        out = []
        for r in records:
            seg = r["segmentation"]
            if isinstance(seg, np.ndarray):
                seg = mask_utils.encode(np.asfortranarray(seg.astype(np.uint8)))
            elif isinstance(seg["counts"], list):
                seg = mask_utils.frPyObjects(seg, *seg["size"])
            else:
                seg = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
            out.append(seg)
        return out

    def unmatched(rows, cols, ious):
        missing = []
        for i, a in enumerate(rows):
            ok = [j for j in range(len(cols)) if ious[i, j] >= min_iou
                  and abs(a["predicted_iou"] - cols[j]["predicted_iou"]) <= score_tolerance
                  and (abs(a["stability_score"] - cols[j]["stability_score"]) <= score_tolerance
                       or (np.isnan(a["stability_score"]) and np.isnan(cols[j]["stability_score"])))]
            if not ok:
                missing.append(i)
        return missing

    ref, cand = compressed(reference), compressed(candidate)
    if ref and cand:
        ious = np.asarray(mask_utils.iou(ref, cand, [0] * len(cand)))
        # pycocotools gives IoU 0 for two empty masks; count them as identical
        ref_empty = np.array([r["area"] == 0 for r in reference])
        cand_empty = np.array([r["area"] == 0 for r in candidate])
        ious[np.outer(ref_empty, cand_empty)] = 1.0
    else:
        ious = np.zeros((len(ref), len(cand)))
    missing_ref = unmatched(reference, candidate, ious)
    missing_cand = unmatched(candidate, reference, ious.T)
    best = [float(ious[i].max()) for i in range(len(ref))] if len(cand) else [0.0] * len(ref)
    return {"matched": not missing_ref and not missing_cand, "reference": len(reference),
            "candidate": len(candidate), "unmatched_reference": missing_ref, "unmatched_candidate": missing_cand,
            "worst_iou": min(best) if best else 1.0}
