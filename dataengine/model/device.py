"""Where the model runs: CUDA when present, else the CPU; bf16 autocast on CUDA; batch sizes per device."""
from __future__ import annotations

from contextlib import nullcontext

POINTS_PER_BATCH = {"cuda": 256, "cpu": 64}   # prompts decoded at once (the official default is 64)
TRAIN_BATCH_FACTOR = {"cuda": 8, "cpu": 1}     # bootstrap training: images per step, times the recipe's


def select_device(device=None):
    """Return a `torch.device`: `device` when given, else CUDA when available, else the CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device):
    """Return a context manager: bf16 autocast on CUDA, a no-op on the CPU (fp32, exact)."""
    import torch

    device = select_device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def default_points_per_batch(device) -> int:
    """Return the number of point prompts to decode at once on `device`."""
    return POINTS_PER_BATCH.get(select_device(device).type, POINTS_PER_BATCH["cpu"])


def train_batch_factor(device) -> int:
    """Return how many times the recipe's images per step a bootstrap run on `device` takes (a GPU affords 8x)."""
    return TRAIN_BATCH_FACTOR.get(select_device(device).type, 1)


def model_device(model):
    """Return the device a model's parameters live on."""
    return next(model.parameters()).device
