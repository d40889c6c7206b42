"""SAM 2 and SAM 2.1 architectures: the registered names, their configs in the `sam2` package, strict loading.

`load_sam2_model(name, checkpoint=None, device=None)` builds the architecture from the `sam2` package's own
Hydra config (as `sam2.build_sam.build_sam2` does, with its image-prediction post-processing: the single-mask
output falls back to the best multimask output when unstable) and loads an official checkpoint file
(`{"model": state_dict}`, as published with SAM 2) with the same strict key and shape check as SAM's
(`dataengine.model.loading.load_state_dict_strictly`): a wrong or truncated file is refused with
`CheckpointMismatch`, never loaded in part. Importing this module imports neither torch nor `sam2`.
"""
from __future__ import annotations

#: Registered name -> config inside the `sam2` package (SAM 2.1 and the original SAM 2 release).
SAM2_CONFIGS = {
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_base_plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_large": "configs/sam2/sam2_hiera_l.yaml",
}
SAM2_ARCHITECTURES = tuple(SAM2_CONFIGS)

#: `build_sam2(..., apply_postprocessing=True)`'s overrides: what SAM 2's image predictor runs with.
IMAGE_POSTPROCESSING = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
)


def is_sam2_name(name: str) -> bool:
    """Return whether `name` is a registered SAM 2 / SAM 2.1 architecture."""
    return name in SAM2_CONFIGS


def is_sam2(model) -> bool:
    """Return whether `model` is a SAM 2 model (`sam2.modeling.sam2_base.SAM2Base`), without importing sam2."""
    return any(cls.__module__.startswith("sam2.") and cls.__name__ == "SAM2Base" for cls in type(model).__mro__)


def build_sam2_model(name: str):
    """Return an untrained SAM 2 model (`SAM2Base`) of the registered architecture `name` (eval mode, CPU)."""
    if name not in SAM2_CONFIGS:
        raise ValueError(f"unknown SAM 2 model {name!r}; registered: {', '.join(SAM2_ARCHITECTURES)}")
    import sam2  # noqa: F401  (initialises Hydra with the package's configs)
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = compose(config_name=SAM2_CONFIGS[name], overrides=list(IMAGE_POSTPROCESSING))
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True).eval()


def load_sam2_model(name: str, checkpoint=None, device=None):
    """Return the SAM 2 model `name` with the weights of `checkpoint` (URI, path or bytes; an official
    `{"model": state_dict}` file) if given, on `device` (default: CUDA when available, else the CPU), in eval mode."""
    from dataengine.model.device import select_device
    from dataengine.model.loading import CheckpointMismatch, load_state_dict_strictly, read_checkpoint

    state_dict = config = None
    if checkpoint is not None:
        state_dict, config = read_checkpoint(checkpoint)
    model = build_sam2_model(name)
    if state_dict is not None:
        source = "(bytes)" if isinstance(checkpoint, (bytes, bytearray)) else checkpoint
        if config:
            raise CheckpointMismatch(f"checkpoint {source} for {name}: SAM 2 architectures take no config, "
                                     f"got keys {sorted(config)}")
        load_state_dict_strictly(model, state_dict, f"checkpoint {source} for {name}")
    return model.to(select_device(device)).eval()
