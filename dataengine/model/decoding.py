"""SAM's mask decoder for a grid of single-point prompts, with the work shared by all prompts done once.

Same weights and the same arithmetic as `MaskDecoder.forward` (the official modules are called for every
learned layer), rearranged for the automatic generator:
- the image embedding plus the dense "no mask" embedding, and the positional encoding, are identical for every
  prompt: they are computed once per image and broadcast instead of `repeat_interleave`d per prompt;
- in the first two-way attention block the image side has not yet seen any prompt, so the key/value
  projections of the token-to-image attention and the query projection of the image-to-token attention are
  computed once per image instead of once per prompt;
- the IoU head needs only the transformer's output tokens, so predicted IoU is known before any mask is
  upscaled: `PointDecoder.mask_logits` upscales only the (prompt, mask) pairs that pass the IoU filter, and
  only the three multimask tokens are ever used. A decoder whose IoU head reads the masks (`sam_tiny`'s
  `MaskAwareDecoder.score_masks`) needs every multimask output first: `decode` then upscales them all and
  keeps the logits for `mask_logits`.
"""
from __future__ import annotations

import math
from typing import NamedTuple


class DecodedPrompts(NamedTuple):
    """Transformer outputs of a batch of B prompts: `iou` (B, 3) predicted IoU of the three multimask outputs,
    `mask_tokens` (B, 3, C) and `image_tokens` (B, N, C), the inputs of the mask upscaling."""

    iou: "object"
    mask_tokens: "object"
    image_tokens: "object"
    low_res: "object" = None     # (B, 3, 4h, 4w) logits, when the IoU head needed them (mask-aware decoders)


def _split_heads(x, heads: int):
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def _attend(attention, q, k, v):
    """Multi-head attention of `attention` (a `segment_anything` Attention) on already projected q, k, v
    (batch dimensions broadcast, so a shared operand can have batch 1)."""
    import torch

    heads = attention.num_heads
    q, k, v = _split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads)
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    out = torch.matmul(torch.softmax(scores, dim=-1), v)
    b, h, n, c = out.shape
    return attention.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class PointDecoder:
    """Decodes single foreground-point prompts against one image embedding (the AMG's `predict_torch` with
    `multimask_output=True`), sharing per-image work across prompts."""

    def __init__(self, model):
        self.model = model
        self.prompt_encoder = model.prompt_encoder
        self.decoder = model.mask_decoder
        self.transformer = self.decoder.transformer
        self._shared = None

    def set_features(self, features) -> None:
        """Prepare the per-image shared state from the (1, C, h, w) image embedding."""
        pe = self.prompt_encoder.get_dense_pe()
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        src = features + dense
        _, c, h, w = src.shape
        keys = src.flatten(2).permute(0, 2, 1)                       # (1, N, C)
        key_pe = pe.flatten(2).permute(0, 2, 1)                      # (1, N, C)
        first = self.transformer.layers[0]
        keyed = keys + key_pe
        self._shared = {
            "size": (c, h, w),
            "keys": keys,
            "key_pe": key_pe,
            "t2i_k": first.cross_attn_token_to_image.k_proj(keyed),
            "t2i_v": first.cross_attn_token_to_image.v_proj(keys),
            "i2t_q": first.cross_attn_image_to_token.q_proj(keyed),
        }

    def embed_points(self, points):
        """Return (P, 2, C) sparse prompt embeddings of (P, 2) float64 points in the model's input frame."""
        import torch

        labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=points.device)
        sparse, _ = self.prompt_encoder(points=(points[:, None, :], labels), boxes=None, masks=None)
        return sparse

    def _click_tokens(self, points):
        """Return (P, N, C) per-prompt additions to the image tokens: the click maps of (P, 2) positive points
        (prompt encoders that draw them into the dense embedding: `sam_tiny` with `click_sigma`)."""
        import torch

        labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=points.device)
        maps = self.prompt_encoder.click_maps(points[:, None, :], labels)     # (P, C, h, w)
        return maps.flatten(2).permute(0, 2, 1)

    def decode(self, sparse, points=None) -> DecodedPrompts:
        """Run the two-way transformer and the IoU head for a batch of (B, 2, C) sparse prompt embeddings of
        the (B, 2) `points` (model input frame; needed only by prompt encoders with click maps)."""
        import torch

        shared = self._shared
        if shared is None:
            raise RuntimeError("PointDecoder.set_features must be called before decode")
        click = None
        if hasattr(self.prompt_encoder, "click_maps"):
            if points is None:
                raise ValueError("this model draws click maps: PointDecoder.decode needs the prompts' points")
            click = self._click_tokens(points).to(shared["keys"].dtype)
        dec = self.decoder
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
        queries, keys = self._first_block(tokens, click)
        key_pe = shared["key_pe"]
        for layer in self.transformer.layers[1:]:
            queries, keys = layer(queries=queries, keys=keys, query_pe=tokens, key_pe=key_pe)
        final = self.transformer.final_attn_token_to_image
        keyed = keys + key_pe
        attn_out = _attend(final, final.q_proj(queries + tokens), final.k_proj(keyed), final.v_proj(keys))
        queries = self.transformer.norm_final_attn(queries + attn_out)
        mask_tokens = queries[:, 2:1 + dec.num_mask_tokens, :]
        if not hasattr(dec, "score_masks"):
            return DecodedPrompts(dec.iou_prediction_head(queries[:, 0, :])[:, 1:], mask_tokens, keys)
        c, h, w = shared["size"]
        image_tokens = keys.transpose(1, 2).reshape(len(keys), c, h, w)
        upscaled = dec.output_upscaling(image_tokens)                           # (B, C/8, 4h, 4w)
        hyper = torch.stack([dec.output_hypernetworks_mlps[j + 1](mask_tokens[:, j]) for j in range(3)], 1)
        b, ch, hh, ww = upscaled.shape
        low_res = (hyper.to(upscaled.dtype) @ upscaled.reshape(b, ch, hh * ww)).reshape(b, 3, hh, ww)
        iou = dec.score_masks(queries[:, 0, :], mask_tokens, image_tokens, low_res)
        return DecodedPrompts(iou, mask_tokens, keys, low_res)

    def _first_block(self, tokens, click=None):
        """The first `TwoWayAttentionBlock` (no PE on its self-attention) with the image side shared.

        `click` (B, N, C): per-prompt click maps added to the image tokens; the projections are linear, so
        the shared projections plus the projected click maps (without bias) are exactly the per-prompt ones.
        """
        block = self.transformer.layers[0]
        shared = self._shared
        t2i, i2t = block.cross_attn_token_to_image, block.cross_attn_image_to_token
        image_keys, t2i_k, t2i_v, i2t_q = shared["keys"], shared["t2i_k"], shared["t2i_v"], shared["i2t_q"]
        if click is not None:
            image_keys = image_keys + click
            t2i_k = t2i_k + click @ t2i.k_proj.weight.T
            t2i_v = t2i_v + click @ t2i.v_proj.weight.T
            i2t_q = i2t_q + click @ i2t.q_proj.weight.T
        queries = block.norm1(block.self_attn(q=tokens, k=tokens, v=tokens))
        attn_out = _attend(t2i, t2i.q_proj(queries + tokens), t2i_k, t2i_v)
        queries = block.norm2(queries + attn_out)
        queries = block.norm3(queries + block.mlp(queries))
        q_tokens = queries + tokens
        attn_out = _attend(i2t, i2t_q, i2t.k_proj(q_tokens), i2t.v_proj(queries))
        keys = block.norm4(image_keys + attn_out)
        return queries, keys

    def mask_logits(self, decoded: DecodedPrompts, prompt_index, mask_index):
        """Return (n, h_low, w_low) low-resolution logits of the chosen (prompt, mask) pairs (mask in 0..2)."""
        import torch

        if decoded.low_res is not None:
            return decoded.low_res[prompt_index, mask_index]
        c, h, w = self._shared["size"]
        dec = self.decoder
        prompts, inverse = torch.unique(prompt_index, return_inverse=True)
        src = decoded.image_tokens[prompts].transpose(1, 2).reshape(len(prompts), c, h, w)
        upscaled = dec.output_upscaling(src)                                   # (U, C/8, 4h, 4w)
        tokens = decoded.mask_tokens[prompt_index, mask_index]                 # (n, C)
        hyper_all = torch.stack([dec.output_hypernetworks_mlps[j + 1](tokens) for j in range(3)])
        hyper = hyper_all[mask_index, torch.arange(len(mask_index), device=tokens.device)]
        b, ch, hh, ww = upscaled.shape
        flat = upscaled.reshape(b, ch, hh * ww)[inverse]                      # (n, C/8, HW)
        return torch.bmm(hyper[:, None, :].to(flat.dtype), flat).reshape(-1, hh, ww)
