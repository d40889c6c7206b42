"""SAM 2's interactive side: image embeddings (with the high-resolution features) and predictors built from them.

SAM 2 resizes every image to its square input frame (`model.image_size`, 1024: the aspect ratio is not kept)
and its mask decoder reads, beside the image embedding (256, 64, 64), two high-resolution feature maps that the
decoder's `conv_s0` / `conv_s1` already projected ((32, 256, 256) and (64, 128, 128)). An `ImageEmbedding` of a
SAM 2 model carries all three, so the embedding cache serves SAM 2 as it serves SAM. The embedding is computed
by the official `SAM2ImagePredictor.set_image` (same transform, same `no_mem_embed`), and `Sam2Predictor`
predicts with the official `SAM2ImagePredictor` set from a cached embedding: the same masks for the same prompts.
"""
from __future__ import annotations


def _official_predictor(model):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    return SAM2ImagePredictor(model)


def compute_sam2_embedding(model, image):
    """Run SAM 2's image encoder on an (H, W, 3) uint8 RGB image; return its `ImageEmbedding` (fp32 tensors:
    features (1, 256, 64, 64) and the two high-resolution maps)."""
    import torch

    from dataengine.model.device import autocast, model_device
    from dataengine.model.embeddings import ImageEmbedding, check_image

    check_image(image)
    predictor = _official_predictor(model)
    with torch.no_grad(), autocast(model_device(model)):
        predictor.set_image(image)
    features = predictor._features
    return ImageEmbedding(features["image_embed"].float(), tuple(image.shape[:2]),
                          (model.image_size, model.image_size),
                          tuple(f.float() for f in features["high_res_feats"]))


class Sam2Predictor:
    """`SamPredictor.predict` for a SAM 2 model whose image is set from an `ImageEmbedding` (no encoder pass).

    `predict(point_coords (N, 2) XY, point_labels (N,), box XYXY, mask_input (1, 256, 256) logits,
    multimask_output)` returns (masks (C, H, W) bool, predicted IoUs (C,), low-res logits (C, 256, 256)),
    C = 3 with `multimask_output`, else 1: what `SAM2ImagePredictor.predict` returns, masks as bool.
    """

    def __init__(self, model, embedding):
        import torch

        from dataengine.model.device import model_device

        if len(embedding.high_res_features) != 2:
            raise ValueError(f"embedding of an image of size {embedding.original_size} has "
                             f"{len(embedding.high_res_features)} high-resolution feature maps, SAM 2 needs 2: "
                             "it was not computed by a SAM 2 model")
        device = model_device(model)

        def tensor(x):
            x = torch.as_tensor(x, device=device).float()
            return x[None] if x.ndim == 3 else x

        self.model = model
        self.official = _official_predictor(model)
        self.official._features = {"image_embed": tensor(embedding.features),
                                   "high_res_feats": [tensor(f) for f in embedding.high_res_features]}
        self.official._orig_hw = [tuple(int(v) for v in embedding.original_size)]
        self.official._is_image_set = True
        self.original_size = self.official._orig_hw[0]

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=True,
                return_logits=False):
        """Return (masks (C, H, W), predicted IoUs (C,), low-res logits (C, 256, 256)) for one prompt."""
        import torch

        from dataengine.model.device import autocast, model_device

        with torch.no_grad(), autocast(model_device(self.model)):
            masks, ious, low_res = self.official.predict(
                point_coords=point_coords, point_labels=point_labels, box=box, mask_input=mask_input,
                multimask_output=multimask_output, return_logits=return_logits)
        return (masks if return_logits else masks > 0.5), ious, low_res


def sam2_predictor_from_embedding(model, embedding) -> Sam2Predictor:
    """Return a `Sam2Predictor` whose image is set from `embedding` (see `compute_sam2_embedding`)."""
    return Sam2Predictor(model, embedding)


def sam2_batch_predictor(model, image):
    """Return a `predict_batch` for `dataengine.simulate.trace_image` from a SAM 2 model (embeds `image`, (H, W, 3)
    uint8 RGB): the prompts of several objects decode in one call, as `SAM2ImagePredictor._predict` decodes one;
    only the mask with the highest predicted IoU is upsampled (the others come back empty). Logits stay on the
    device, clamped to +-32 as the official predictor returns them."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from dataengine.model.device import autocast, model_device

    predictor = _official_predictor(model)
    device = model_device(model)
    with torch.no_grad(), autocast(device):
        predictor.set_image(np.ascontiguousarray(image))
    features, original_size = predictor._features, predictor._orig_hw[0]

    def predict_batch(points, labels, mask_input, multimask):
        coords = predictor._transforms.transform_coords(
            torch.as_tensor(np.asarray(points, np.float32), device=device), normalize=True, orig_hw=original_size)
        with torch.no_grad(), autocast(device):
            sparse, dense = model.sam_prompt_encoder(
                points=(coords, torch.as_tensor(np.asarray(labels), dtype=torch.int, device=device)), boxes=None,
                masks=None if mask_input is None else torch.cat([torch.as_tensor(m) for m in mask_input]))
            low_res, scores, _, _ = model.sam_mask_decoder(
                image_embeddings=features["image_embed"], image_pe=model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
                repeat_image=True, high_res_features=features["high_res_feats"])
            low_res, scores = low_res.float(), scores.float()
            best = scores.argmax(1)
            rows = torch.arange(len(best), device=best.device)
            chosen = F.interpolate(low_res[rows, best][:, None], original_size, mode="bilinear",
                                   align_corners=False)
        masks = np.zeros((len(best), low_res.shape[1]) + tuple(original_size), bool)
        masks[rows.cpu().numpy(), best.cpu().numpy()] = (chosen[:, 0] > 0.0).cpu().numpy()
        return masks, scores.cpu().numpy(), torch.clamp(low_res, -32.0, 32.0)

    return predict_batch
