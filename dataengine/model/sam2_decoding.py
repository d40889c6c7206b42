"""SAM 2's mask decoder for a grid of single-point prompts, with the work shared by all prompts done once.

The same weights and the same arithmetic as `sam2.modeling.sam.mask_decoder.MaskDecoder.predict_masks` (the
official modules run every learned layer), rearranged for the automatic generator:
- the image embedding plus the "no mask" dense embedding, its positional encoding, and in the first two-way
  block the key/value projections of the token-to-image attention and the query projection of the
  image-to-token attention are the same for every prompt: computed once per image and broadcast, where the
  official decoder repeats the image per prompt;
- the IoU head reads only the transformer's output tokens, so predicted IoUs are known before any mask is
  upscaled: `Sam2PointDecoder.mask_logits` upscales (transposed convolutions plus the high-resolution features)
  only the prompts with a (prompt, mask) pair that passed the IoU filter, a few prompts at a time.
"""
from __future__ import annotations

from typing import NamedTuple

UPSCALE_CHUNK = 16      # prompts upscaled at once: (16, 32, 256, 256) floats at 1024 px


class DecodedPrompts(NamedTuple):
    """Transformer outputs of B prompts: `iou` (B, 4) predicted IoU of the four mask tokens (0: single-mask
    output, 1..3: the multimask outputs), `mask_tokens` (B, 4, C), `image_tokens` (B, N, C)."""

    iou: object
    mask_tokens: object
    image_tokens: object


def _attend(attention, q, k, v):
    """Multi-head attention of `attention` (an official `Attention`) on projected q (B, T, c) and k, v of batch
    B or 1 (a shared operand is broadcast)."""
    import torch.nn.functional as F

    heads, batch = attention.num_heads, max(q.shape[0], k.shape[0])

    def split(x):
        b, n, c = x.shape
        return x.reshape(b, n, heads, c // heads).transpose(1, 2).expand(batch, -1, -1, -1)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    b, h, n, c = out.shape
    return attention.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class Sam2PointDecoder:
    """Decodes single foreground-point prompts against one SAM 2 image embedding (what the official automatic
    generator's `SAM2ImagePredictor._predict` computes), sharing per-image work across prompts."""

    def __init__(self, model):
        self.model = model
        self.prompt_encoder = model.sam_prompt_encoder
        self.decoder = model.sam_mask_decoder
        self.transformer = self.decoder.transformer
        self.first_token = 1 if self.decoder.pred_obj_scores else 0     # SAM 2.1: an object-score token first
        self._shared = None

    def set_features(self, features, high_res_features) -> None:
        """Prepare the per-image state from the (1, C, h, w) embedding and the two high-resolution maps."""
        pe = self.prompt_encoder.get_dense_pe()
        keys = (features + self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)).flatten(2).permute(0, 2, 1)
        key_pe = pe.flatten(2).permute(0, 2, 1)
        first = self.transformer.layers[0]
        self._shared = {
            "size": tuple(features.shape[1:]),
            "keys": keys,
            "key_pe": key_pe,
            "t2i_k": first.cross_attn_token_to_image.k_proj(keys + key_pe),
            "t2i_v": first.cross_attn_token_to_image.v_proj(keys),
            "i2t_q": first.cross_attn_image_to_token.q_proj(keys + key_pe),
            "high_res": list(high_res_features),
        }

    def embed_points(self, points):
        """Return (P, 2, C) sparse embeddings of (P, 2) float32 points in the model frame (point + padding)."""
        import torch

        labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=points.device)
        sparse, _ = self.prompt_encoder(points=(points[:, None, :], labels), boxes=None, masks=None)
        return sparse

    def decode(self, sparse) -> DecodedPrompts:
        """Run the two-way transformer and the IoU head for (B, T, C) sparse prompt embeddings."""
        import torch

        if self._shared is None:
            raise RuntimeError("Sam2PointDecoder.set_features must be called before decode")
        dec, shared = self.decoder, self._shared
        weights = ([dec.obj_score_token.weight] if self.first_token else []) + [dec.iou_token.weight,
                                                                                 dec.mask_tokens.weight]
        output_tokens = torch.cat(weights, dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
        queries, keys = self._first_block(tokens)
        for layer in self.transformer.layers[1:]:
            queries, keys = layer(queries=queries, keys=keys, query_pe=tokens, key_pe=shared["key_pe"])
        final = self.transformer.final_attn_token_to_image
        queries = self.transformer.norm_final_attn(
            queries + final(q=queries + tokens, k=keys + shared["key_pe"], v=keys))
        s = self.first_token
        iou = dec.iou_prediction_head(queries[:, s, :])
        return DecodedPrompts(iou, queries[:, s + 1:s + 1 + dec.num_mask_tokens, :], keys)

    def _first_block(self, tokens):
        """The first `TwoWayAttentionBlock` (no PE on its self-attention) with the image side shared."""
        block, shared = self.transformer.layers[0], self._shared
        t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
        queries = block.norm1(block.self_attn(q=tokens, k=tokens, v=tokens))
        queries = block.norm2(queries + _attend(t2i, t2i.q_proj(queries + tokens), shared["t2i_k"], shared["t2i_v"]))
        queries = block.norm3(queries + block.mlp(queries))
        attn_out = _attend(i2t, shared["i2t_q"], i2t.k_proj(queries + tokens), i2t.v_proj(queries))
        return queries, block.norm4(shared["keys"] + attn_out)

    def _upscale(self, image_tokens):
        """Return (U, C/8, 4h, 4w) upscaled embeddings of (U, N, C) image tokens (official upscaling path)."""
        c, h, w = self._shared["size"]
        src = image_tokens.transpose(1, 2).reshape(len(image_tokens), c, h, w)
        dec = self.decoder
        if not dec.use_high_res_features:
            return dec.output_upscaling(src)
        dc1, ln1, act1, dc2, act2 = dec.output_upscaling
        feat_s0, feat_s1 = self._shared["high_res"]
        return act2(dc2(act1(ln1(dc1(src) + feat_s1))) + feat_s0)

    def mask_logits(self, decoded: DecodedPrompts, prompt_index, mask_index):
        """Return (n, 4h, 4w) low-resolution logits of the chosen (prompt, mask token) pairs (token in 0..3)."""
        import torch

        dec = self.decoder
        prompts, inverse = torch.unique(prompt_index, return_inverse=True)
        n = len(prompt_index)
        out = None
        for start in range(0, len(prompts), UPSCALE_CHUNK):
            chunk = prompts[start:start + UPSCALE_CHUNK]
            upscaled = self._upscale(decoded.image_tokens[chunk])                # (u, C/8, H4, W4)
            u, ch, hh, ww = upscaled.shape
            rows = torch.nonzero((inverse >= start) & (inverse < start + len(chunk))).flatten()
            tokens = decoded.mask_tokens[prompt_index[rows], mask_index[rows]]     # (r, C)
            hyper = torch.empty(len(rows), ch, dtype=tokens.dtype, device=tokens.device)
            for j in torch.unique(mask_index[rows]).tolist():
                pick = mask_index[rows] == j
                hyper[pick] = dec.output_hypernetworks_mlps[j](tokens[pick])
            flat = upscaled.reshape(u, ch, hh * ww)
            logits = torch.bmm(hyper[:, None, :].to(flat.dtype), flat[inverse[rows] - start]).reshape(-1, hh, ww)
            if out is None:
                out = logits.new_empty((n, hh, ww))
            out[rows] = logits
        if out is None:
            side = 4 * self._shared["size"][1]
            out = decoded.iou.new_empty((0, side, 4 * self._shared["size"][2]))
        return out

    def single_mask(self, decoded: DecodedPrompts):
        """Return (token index (B,), predicted IoU (B,), logits (B, 4h, 4w)) of the single-mask output of each
        prompt, falling back to the best multimask token when its logits are unstable, as the official decoder
        does with `dynamic_multimask_via_stability` (SAM 2's image-prediction post-processing)."""
        import torch

        dec = self.decoder
        count = decoded.iou.shape[0]
        index = torch.zeros(count, dtype=torch.long, device=decoded.iou.device)
        logits = self.mask_logits(decoded, torch.arange(count, device=index.device), index)
        if dec.dynamic_multimask_via_stability and not dec.training:
            delta = dec.dynamic_multimask_stability_delta
            flat = logits.flatten(1)
            inner, outer = (flat > delta).sum(-1).float(), (flat > -delta).sum(-1).float()
            stability = torch.where(outer > 0, inner / outer, torch.ones_like(inner))
            unstable = torch.nonzero(stability < dec.dynamic_multimask_stability_thresh).flatten()
            if len(unstable):
                index[unstable] = decoded.iou[unstable, 1:].argmax(-1) + 1
                logits[unstable] = self.mask_logits(decoded, unstable, index[unstable])
        return index, decoded.iou.gather(1, index[:, None])[:, 0], logits
