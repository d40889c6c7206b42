"""The manual stages' names, the paper's 30 s rule, and the batch a run works on."""
from __future__ import annotations

from dataengine.service import batches as batch_keys

MANUAL_STAGES = ("stage1", "stage2")
SLOW_MASK_SECONDS = 30.0        # SAM paper, stage 1: move on to the next image once a mask took over 30 s


def check_stage(stage: str) -> str:
    """Return `stage` if it is a manual stage name (`stage1`, `stage2`); else ValueError."""
    if stage not in MANUAL_STAGES:
        raise ValueError(f"stage {stage!r}: manual annotation stages are {', '.join(MANUAL_STAGES)}")
    return stage


def batch_name_for(stage: str, run_id: str, batch: str | None = None) -> str:
    """Return the batch of a run: `batch` when given, else `{stage}-{run_id}` made key-safe."""
    if batch:
        return batch_keys.check_batch_name(batch)
    safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return batch_keys.check_batch_name(f"{stage}-{safe_run}"[:128])


__all__ = ["MANUAL_STAGES", "SLOW_MASK_SECONDS", "check_stage", "batch_name_for"]
