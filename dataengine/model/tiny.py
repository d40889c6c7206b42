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
}


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
    sam = Sam(
        image_encoder=encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=MaskDecoder(
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
