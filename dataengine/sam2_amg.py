"""Fully automatic mask generation with a SAM 2 model (stage 3), the semantics of `SAM2AutomaticMaskGenerator`.

`Sam2MaskGenerator(model, preset=None, **settings).generate(image)` takes the official generator's settings
with their meaning and defaults (`SAM2_OFFICIAL_DEFAULTS`: a 32x32 grid, IoU > 0.8, stability >= 0.95 around
`mask_threshold`, box NMS 0.7, mask-to-mask refinement `use_m2m` off, three masks per point) plus the paper's
`max_mask_area_ratio`, and returns the official records in the official order. Where SAM 2 differs from SAM:
- the image is resized to the model's square frame (aspect not kept), so prompts are scaled per axis and the
  256x256 low-resolution logits map onto the whole crop (one bilinear resize, no padding to cut off);
- `min_mask_region_area` fills holes and removes sprinkles of at most that many pixels in the low-resolution
  logits (8-connected), before upsampling, as SAM 2's predictor does; there is no full-resolution cleanup.
  (The official code needs its CUDA extension for this and silently skips it without; here it runs anywhere.)
- `use_m2m` re-decodes every mask with its own low-resolution logits as the mask prompt, single-mask output.

Faster than the reference with the same output: the IoU filter runs on the transformer's output tokens before
any mask is upscaled, per-image decoder work is shared by all prompts (`model/sam2_decoding.py`), and stability,
boxes, areas and RLEs come from the column-resized logits of the survivors (`model/upsampling.py`), never from
the full-resolution float maps of every candidate.
"""
from __future__ import annotations

from dataengine.amg import DEFAULTS, PRESETS, UPSCALE_BUDGET, GridMaskGenerator, MaskSet, resolve_settings

#: `SAM2AutomaticMaskGenerator.__init__`'s settings and defaults (sam2 1.1.0).
SAM2_OFFICIAL_DEFAULTS = {
    "points_per_side": 32,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.8,
    "stability_score_thresh": 0.95,
    "stability_score_offset": 1.0,
    "mask_threshold": 0.0,
    "box_nms_thresh": 0.7,
    "crop_n_layers": 0,
    "crop_nms_thresh": 0.7,
    "crop_overlap_ratio": 512 / 1500,
    "crop_n_points_downscale_factor": 1,
    "point_grids": None,
    "min_mask_region_area": 0,
    "output_mode": "binary_mask",
    "use_m2m": False,
    "multimask_output": True,
}
SAM2_DEFAULTS = {**SAM2_OFFICIAL_DEFAULTS, "points_per_batch": None, "max_mask_area_ratio": None}
#: The engine's presets (`dataengine.amg.PRESETS`: `sa1b` is the SA-1B recipe) with `official` meaning SAM 2's.
SAM2_PRESETS = {**PRESETS, "official": {k: v for k, v in SAM2_OFFICIAL_DEFAULTS.items() if k != "points_per_batch"}}


def resolve_sam2_settings(preset: str | None = None, **settings) -> dict:
    """Return the full settings: SAM 2's defaults, then the preset, then `settings`; raise on unknown names or
    values."""
    if preset is not None and preset not in SAM2_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(sorted(SAM2_PRESETS))}")
    unknown = sorted(set(settings) - set(SAM2_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown SAM 2 mask generator setting(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(SAM2_DEFAULTS))}")
    resolved = {**SAM2_DEFAULTS, **(SAM2_PRESETS[preset] if preset else {}), **settings}
    if settings.get("point_grids") is not None and "points_per_side" not in settings:
        resolved["points_per_side"] = None
    # the settings SAM's generator shares are checked by its own rules (grid, output mode, area ratio, sizes)
    resolve_settings(**{name: value for name, value in resolved.items() if name in DEFAULTS})
    return resolved


def connected_components(mask):
    """Return (labels, areas), both (N, 1, H, W) int32, of the 8-connected components of a (N, 1, H, W) bool
    mask: the contract of SAM 2's CUDA `get_connected_components` (0 and area 0 outside the mask)."""
    import cv2
    import numpy as np
    import torch

    planes = mask.detach().to("cpu", torch.uint8).numpy()
    labels = np.zeros(planes.shape, np.int32)
    areas = np.zeros(planes.shape, np.int32)
    for i, plane in enumerate(planes[:, 0]):
        _, plane_labels, stats, _ = cv2.connectedComponentsWithStats(plane, connectivity=8)
        labels[i, 0] = plane_labels
        areas[i, 0] = np.where(plane_labels > 0, stats[plane_labels, cv2.CC_STAT_AREA], 0)
    return torch.from_numpy(labels).to(mask.device), torch.from_numpy(areas).to(mask.device)


def fill_holes_and_sprinkles(low_res, threshold: float, max_area: float):
    """Return (n, h, w) logits with holes (background components of at most `max_area` pixels) set to
    threshold + 10 and sprinkles (foreground components as small, found on the input) set to threshold - 10:
    SAM 2's `SAM2Transforms.postprocess_masks` with max_hole_area = max_sprinkle_area = `max_area`."""
    import torch

    planes = low_res[:, None]
    labels, areas = connected_components(planes <= threshold)
    out = torch.where((labels > 0) & (areas <= max_area), threshold + 10.0, planes)
    labels, areas = connected_components(planes > threshold)
    return torch.where((labels > 0) & (areas <= max_area), threshold - 10.0, out)[:, 0]


class Sam2MaskGenerator(GridMaskGenerator):
    """Automatic mask generator for SAM 2: `Sam2MaskGenerator(model, preset=None, **settings).generate(image)`.

    `model` is a `sam2.modeling.sam2_base.SAM2Base`; `settings` are `SAM2AutomaticMaskGenerator`'s keywords
    plus `max_mask_area_ratio`. `generate` takes an (H, W, 3) uint8 RGB array and returns one dict per mask with
    the official keys in the official order: segmentation, area, bbox (XYWH), predicted_iou, point_coords
    ([[x, y]]), stability_score, crop_box (XYWH).
    """

    def __init__(self, model, preset: str | None = None, **settings):
        from dataengine.model.sam2_decoding import Sam2PointDecoder

        super().__init__(model, resolve_sam2_settings(preset, **settings), Sam2PointDecoder(model))

    def _generation_context(self):
        """The whole generation runs under the device's autocast (bf16 on CUDA), as SAM 2's generator does."""
        from dataengine.model.device import autocast

        return autocast(self.device)

    def _embed_crop(self, crop, crop_points):
        """Embed the crop with its high-resolution features; the points scaled per axis to the square frame."""
        import torch

        from dataengine.model.sam2_predictor import compute_sam2_embedding

        embedding = compute_sam2_embedding(self.model, crop)
        self.decoder.set_features(embedding.features, embedding.high_res_features)
        self._embedding = embedding.features      # the mask-to-mask refinement calls the official decoder
        crop_points = torch.as_tensor(crop_points, dtype=torch.float32, device=self.device)
        model_points = crop_points.clone()                       # SAM2Transforms.transform_coords(normalize=True)
        model_points[:, 0] = model_points[:, 0] / crop.shape[1]
        model_points[:, 1] = model_points[:, 1] / crop.shape[0]
        return crop_points, (model_points * self.model.image_size,)

    def _candidates(self, model_points):
        """Return (prompt index (n,), predicted IoU (n,), low-res logits (n, h, w)) of the masks that pass the IoU
        filter: three per prompt (or one), after mask-to-mask refinement when `use_m2m`."""
        import torch

        decoded = self.decoder.decode(self.decoder.embed_points(model_points))
        count = len(model_points)
        if self.use_m2m or not self.multimask_output:
            if self.multimask_output:
                prompt = torch.arange(count, device=self.device).repeat_interleave(3)
                token = torch.arange(1, 4, device=self.device).repeat(count)
                iou, low_res = decoded.iou[:, 1:].flatten(), self.decoder.mask_logits(decoded, prompt, token)
            else:
                prompt = torch.arange(count, device=self.device)
                _, iou, low_res = self.decoder.single_mask(decoded)
            if self.use_m2m:
                iou, low_res = self._refine_with_m2m(model_points[prompt], low_res.clamp(-32.0, 32.0))
            keep = torch.nonzero(iou.float() > self.pred_iou_thresh).flatten() if self.pred_iou_thresh > 0 \
                else torch.arange(len(iou), device=self.device)
            return prompt[keep], iou[keep].float(), low_res[keep].float()
        iou = decoded.iou[:, 1:].float().flatten()                       # point-major, then the 3 masks
        keep = torch.nonzero(iou > self.pred_iou_thresh).flatten() if self.pred_iou_thresh > 0 \
            else torch.arange(len(iou), device=self.device)
        low_res = self.decoder.mask_logits(decoded, keep // 3, keep % 3 + 1)
        return keep // 3, iou[keep], low_res.float()

    def _refine_with_m2m(self, model_points, low_res):
        """Re-decode each mask with its point and its own low-res logits as the mask prompt (single-mask output,
        the official decoder called as `SAM2AutomaticMaskGenerator.refine_with_m2m` calls it)."""
        import torch

        model, high_res = self.model, self.decoder._shared["high_res"]
        ious, logits = [], []
        for start in range(0, len(model_points), self.points_per_batch):
            points = model_points[start:start + self.points_per_batch]
            labels = torch.ones(len(points), 1, dtype=torch.int, device=self.device)
            sparse, dense = model.sam_prompt_encoder(points=(points[:, None], labels), boxes=None,
                                                     masks=low_res[start:start + self.points_per_batch, None])
            refined, iou, _, _ = model.sam_mask_decoder(
                image_embeddings=self._embedding, image_pe=model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
                repeat_image=True, high_res_features=high_res)
            ious.append(iou[:, 0])
            logits.append(refined[:, 0])
        return torch.cat(ious), torch.cat(logits)

    def _process_batch(self, model_points, image_points, crop_box, image_size) -> MaskSet:
        """Decode one batch of point prompts and keep the masks that pass every per-mask filter."""
        import torch

        from dataengine.model.upsampling import UpscaledLogits

        prompt, iou, low_res = self._candidates(model_points)
        if len(iou) == 0:
            return MaskSet.concat([], self.device)
        if self.min_mask_region_area > 0:
            low_res = fill_holes_and_sprinkles(low_res, self.mask_threshold, self.min_mask_region_area)
        x0, y0, x1, y1 = crop_box
        side = low_res.shape[-1]     # the low-res logits cover the whole crop: one bilinear resize to it
        chunk = max(1, UPSCALE_BUDGET // max(1, low_res.shape[1] * image_size[1]))
        parts = [self._keep(UpscaledLogits(low_res[index], (low_res.shape[-2], side), (y1 - y0, x1 - x0), side),
                            self.mask_threshold, iou[index], image_points[prompt[index]], crop_box, image_size)
                 for index in torch.split(torch.arange(len(iou), device=self.device), chunk)]
        return MaskSet.concat(parts, self.device)
