"""`sam_tiny`: a small SAM that trains and runs on a CPU, built around the official prompt encoder and decoder.

The official `Sam`, `PromptEncoder`, `MaskDecoder` and `TwoWayTransformer` are used as they are; only the
image encoder is a small convolutional network (a CNN learned faster per CPU-second than a small ViT in trials).
Inputs are resized so the long side is `TINY_CONFIG["img_size"]` (256). The embedding has stride 8 (32x32
tokens) and the low-res masks are 128x128: on this project's scenes, where more than half of the objects are
under 1000 px, 64x64 masks or 16-px tokens cap what the model can reach (docs/model.md). To keep the decoder
affordable at 1024 tokens, the two-way transformer has one block instead of SAM's two.
"""
from __future__ import annotations

TINY_CONFIG = {
    "img_size": 256,        # input frame (long side), like SAM's 1024
    "stride": 8,            # encoder stride: 256 / 8 = 32x32 image embedding
    "embed_dim": 128,       # image embedding channels = prompt embedding dim = decoder transformer dim
    "widths": [32, 64, 96, 128],
    "decoder_depth": 1,     # SAM: 2; one two-way block (plus the final attention) at 32x32 tokens
    "decoder_heads": 4,
    "decoder_mlp_dim": 512,
    "iou_head_hidden_dim": 128,
    "click_sigma": 1.0,     # > 0: point prompts are also drawn into the dense embedding (ClickMapPromptEncoder)
    "iou_head": "mask_aware",   # "token": SAM's IoU head (IoU token only); "mask_aware": MaskAwareDecoder
    "instance_dim": 16,     # > 0: a training-only instance-embedding head on the encoder (InstanceHead)
}
MASK_SCALARS = 4            # scalar summaries of a mask the mask-aware IoU head reads (see MaskAwareDecoder)


def _encoder_class():
    import torch
    from torch import nn

    class ConvBlock(nn.Module):
        """Two 3x3 convs with a residual connection (BatchNorm-free, GroupNorm for small batches)."""

        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.norm1 = nn.GroupNorm(8, cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.norm2 = nn.GroupNorm(8, cout)
            self.skip = (nn.Identity() if stride == 1 and cin == cout
                         else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.GroupNorm(8, cout)))
            self.act = nn.GELU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.act(self.norm1(self.conv1(x)))
            y = self.norm2(self.conv2(y))
            return self.act(y + self.skip(x))

    class TinyConvEncoder(nn.Module):
        """Image encoder: (B, 3, S, S) normalised pixels -> (B, embed_dim, S/stride, S/stride) embedding."""

        def __init__(self, img_size: int, stride: int, widths: list[int], embed_dim: int):
            super().__init__()
            self.img_size = img_size
            assert stride in (8, 16), "sam_tiny supports encoder strides 8 and 16"
            n_down = {8: 3, 16: 4}[stride]
            layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
                                       nn.GroupNorm(8, widths[0]), nn.GELU()]
            cin = widths[0]
            for i, width in enumerate(widths):
                down = 2 if 0 < i < n_down else 1
                layers += [ConvBlock(cin, width, down), ConvBlock(width, width, 1)]
                cin = width
            self.body = nn.Sequential(*layers)
            # context at the embedding scale: a dilated block widens the receptive field cheaply
            self.context = nn.Sequential(nn.Conv2d(cin, cin, 3, padding=2, dilation=2, bias=False),
                                         nn.GroupNorm(8, cin), nn.GELU(),
                                         nn.Conv2d(cin, cin, 3, padding=4, dilation=4, bias=False),
                                         nn.GroupNorm(8, cin), nn.GELU())
            self.neck = nn.Sequential(nn.Conv2d(cin, embed_dim, 1, bias=False), nn.GroupNorm(1, embed_dim),
                                      nn.Conv2d(embed_dim, embed_dim, 3, padding=1, bias=False),
                                      nn.GroupNorm(1, embed_dim))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # channels-last convolutions are about 2x faster on the CPU (oneDNN); the embedding comes out contiguous
            x = self.body(x.contiguous(memory_format=torch.channels_last))
            x = x + self.context(x)
            return self.neck(x).contiguous()

    return TinyConvEncoder


def _click_map_encoder_class():
    import torch
    from segment_anything.modeling import PromptEncoder
    from torch import nn

    class ClickMapPromptEncoder(PromptEncoder):
        """The official prompt encoder, plus click maps: each point prompt also adds its label's learned
        embedding to the dense embedding, weighted by a Gaussian (std `click_sigma` tokens) around the point, so
        the decoder sees at the token grid where the clicks are (the sparse tokens carry them only through
        random Fourier features). Boxes and mask prompts are encoded as in SAM."""

        def __init__(self, *args, click_sigma: float, **kwargs):
            super().__init__(*args, **kwargs)
            self.click_sigma = float(click_sigma)
            self.click_embed = nn.Embedding(2, self.embed_dim)   # negative, positive

        def click_maps(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            """Return (N, C, h, w): the click maps of points (N, K, 2) in the input frame with labels (N, K);
            labels other than 0 / 1 (padding, box corners) draw nothing."""
            h, w = self.image_embedding_size
            stride_y = self.input_image_size[0] / h
            stride_x = self.input_image_size[1] / w
            xs = (torch.arange(w, device=coords.device, dtype=torch.float32) + 0.5) * stride_x
            ys = (torch.arange(h, device=coords.device, dtype=torch.float32) + 0.5) * stride_y
            px = coords[..., 0].float() + 0.5     # pixel centres, as SAM's point encoding
            py = coords[..., 1].float() + 0.5
            dx = (xs[None, None, :] - px[..., None]) / stride_x            # (N, K, w) in tokens
            dy = (ys[None, None, :] - py[..., None]) / stride_y            # (N, K, h)
            inv = -0.5 / self.click_sigma**2
            weight = torch.exp(inv * dy * dy)[..., :, None] * torch.exp(inv * dx * dx)[..., None, :]   # (N, K, h, w)
            real = (labels == 0) | (labels == 1)
            weight = weight * real[..., None, None].to(weight.dtype)
            embed = self.click_embed(labels.clamp(0, 1).long())            # (N, K, C)
            return torch.einsum("nkhw,nkc->nchw", weight, embed.to(weight.dtype))

        def forward(self, points, boxes, masks):
            sparse, dense = super().forward(points, boxes, masks)
            if points is not None:
                dense = dense + self.click_maps(*points).to(dense.dtype)
            return sparse, dense

    return ClickMapPromptEncoder


def _mask_aware_decoder_class():
    import torch
    import torch.nn.functional as F
    from segment_anything.modeling import MaskDecoder
    from segment_anything.modeling.mask_decoder import MLP

    class MaskAwareDecoder(MaskDecoder):
        """The official mask decoder whose IoU prediction looks at the masks it scores.

        SAM predicts IoU from the IoU token alone; trained from scratch on a CPU budget that token predicts
        nearly the same value for the three candidates whatever was clicked, so the chosen first mask was
        0.12-0.16 IoU below the best of the three (docs/benchmarks.md, fifth session). Here each mask's score
        reads, besides the IoU and mask tokens, the final image tokens pooled inside and outside the mask (the
        mask's probabilities, detached, average-pooled to the token grid) and four scalars of its logits (area,
        soft area, stability, boundary sharpness), so it can tell a mask that follows edges from one that does
        not. Masks are computed exactly as in `MaskDecoder.predict_masks`; only `iou_prediction_head` is
        replaced by `mask_score_head`."""

        def __init__(self, *args, iou_head_hidden_dim: int, **kwargs):
            super().__init__(*args, iou_head_hidden_dim=iou_head_hidden_dim, **kwargs)
            del self.iou_prediction_head
            c = self.transformer_dim
            self.mask_score_head = MLP(4 * c + MASK_SCALARS, iou_head_hidden_dim, 1, 3)

        def score_masks(self, iou_token_out, mask_tokens_out, image_tokens, masks):
            """Return (B, K) predicted IoUs of masks (B, K, H, W) logits, from the IoU token (B, C), the mask
            tokens (B, K, C) and the final image tokens (B, C, h, w)."""
            b, k = masks.shape[:2]
            logits = masks.detach().float()
            prob = logits.sigmoid()
            h, w = image_tokens.shape[-2:]
            pooled = F.adaptive_avg_pool2d(prob, (h, w)).flatten(2)              # (B, K, hw)
            tokens = image_tokens.flatten(2).float()                             # (B, C, hw)
            inside = torch.einsum("bkn,bcn->bkc", pooled, tokens) / (pooled.sum(-1, keepdim=True) + 1e-3)
            rest = 1 - pooled
            outside = torch.einsum("bkn,bcn->bkc", rest, tokens) / (rest.sum(-1, keepdim=True) + 1e-3)
            flat = logits.flatten(2)
            area = (flat > 0).float().mean(-1)
            soft = prob.flatten(2).mean(-1)
            stability = (flat > 1).float().sum(-1) / (flat > -1).float().sum(-1).clamp(min=1)
            edge = (prob * (1 - prob)).flatten(2).mean(-1) / (soft + 1e-3)
            scalars = torch.stack([torch.log(area + 1e-4), torch.log(soft + 1e-4), stability, edge], -1)
            features = torch.cat([iou_token_out.float()[:, None].expand(-1, k, -1), mask_tokens_out.float(),
                                  inside, inside - outside, scalars], -1)
            return self.mask_score_head(features.to(mask_tokens_out.dtype)).squeeze(-1)

        def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings):
            """`MaskDecoder.predict_masks` with the mask-aware score: returns (B, 4, H, W) logits, (B, 4) IoUs."""
            output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
            output_tokens = output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
            tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
            src = torch.repeat_interleave(image_embeddings, tokens.shape[0], dim=0) + dense_prompt_embeddings
            pos_src = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
            b, c, h, w = src.shape
            hs, src = self.transformer(src, pos_src, tokens)
            mask_tokens_out = hs[:, 1:1 + self.num_mask_tokens, :]
            src = src.transpose(1, 2).reshape(b, c, h, w)
            upscaled = self.output_upscaling(src)
            hyper = torch.stack([self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :])
                                 for i in range(self.num_mask_tokens)], dim=1)
            _, uc, uh, uw = upscaled.shape
            masks = (hyper @ upscaled.reshape(b, uc, uh * uw)).reshape(b, -1, uh, uw)
            return masks, self.score_masks(hs[:, 0, :], mask_tokens_out, src, masks)

    return MaskAwareDecoder


def _instance_head_class():
    from torch import nn

    class InstanceHead(nn.Module):
        """Training-only head on the image embedding: (B, C, h, w) -> (B, D, h, w) per-token instance
        embeddings, trained with a discriminative loss (tokens of one object close, of different objects apart:
        `training.losses.discriminative_loss`), which shapes the encoder from every object of an image at once.
        Inference never calls it."""

        def __init__(self, embed_dim: int, dim: int):
            super().__init__()
            self.proj = nn.Sequential(nn.Conv2d(embed_dim, embed_dim, 1), nn.GELU(), nn.Conv2d(embed_dim, dim, 1))

        def forward(self, embedding):
            return self.proj(embedding)

    return InstanceHead


def build_sam_tiny(config: dict | None = None):
    """Return an untrained `segment_anything.modeling.Sam` with the `sam_tiny` configuration."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    cfg = {**TINY_CONFIG, **(config or {})}
    embedding_side = cfg["img_size"] // cfg["stride"]
    encoder = _encoder_class()(cfg["img_size"], cfg["stride"], cfg["widths"], cfg["embed_dim"])
    prompt_args = dict(embed_dim=cfg["embed_dim"], image_embedding_size=(embedding_side, embedding_side),
                       input_image_size=(cfg["img_size"], cfg["img_size"]), mask_in_chans=16)
    if cfg["click_sigma"] > 0:
        prompt_encoder = _click_map_encoder_class()(**prompt_args, click_sigma=cfg["click_sigma"])
    else:
        prompt_encoder = PromptEncoder(**prompt_args)
    if cfg.get("instance_dim", 0) > 0:
        encoder.instance_head = _instance_head_class()(cfg["embed_dim"], cfg["instance_dim"])
    decoder_class = _mask_aware_decoder_class() if cfg.get("iou_head", "token") == "mask_aware" else MaskDecoder
    sam = Sam(
        image_encoder=encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=decoder_class(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=cfg["decoder_depth"], embedding_dim=cfg["embed_dim"],
                                          mlp_dim=cfg["decoder_mlp_dim"], num_heads=cfg["decoder_heads"]),
            transformer_dim=cfg["embed_dim"],
            iou_head_depth=3,
            iou_head_hidden_dim=cfg["iou_head_hidden_dim"],
        ),
    )
    sam.eval()
    return sam
