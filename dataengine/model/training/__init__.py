"""Training a SAM with the paper's simulated interactive recipe (App. A), on CPU or CUDA.

The package holds, one concern a module: the settings and the paper's constants (settings), the training data
(data), prompt sampling (prompts), the mask losses (losses), the simulated interactive session and the held-out
loss (interactive), the optimisation step and the resumable loop (loop), checkpoints and cards (checkpoints),
fitting a recipe to a time budget (budget), the bootstrap recipe of `sam_tiny` v0 (bootstrap) and fine-tuning on
a training snapshot (finetune). Everything random comes from generators seeded by (seed, step), so a run is
deterministic and resumes exactly.
"""
from __future__ import annotations

from dataengine.model.training.bootstrap import (BOOTSTRAP, BOOTSTRAP_PHASES, _phase_seed_base, bootstrap,
                                                 bootstrap_settings, recipe_of)
from dataengine.model.training.budget import BUDGET_MARGIN, _budgeted, measure_step_seconds, plan_steps
from dataengine.model.training.checkpoints import (SHIPPED_CHECKPOINT, checkpoint_bytes, shipped_checkpoint_path,
                                                   write_checkpoint)
from dataengine.model.training.data import (Sample, StoreRecords, SyntheticScenes, WithRehearsal, _StepBatches,
                                            collate, split_heldout, to_frame)
from dataengine.model.training.finetune import read_snapshot, train_from_snapshot
from dataengine.model.training.interactive import decode, heldout_loss, interactive_loss
from dataengine.model.training.loop import _as_is, lr_at, optimisation_step, train
from dataengine.model.training.losses import mask_losses
from dataengine.model.training.prompts import (_uniform_points, dense_prompts, embed_prompts, error_clicks,
                                               noisy_boxes)
from dataengine.model.training.settings import (BOOTSTRAP_HELDOUT_SEED_BASE, BOX_NOISE_CAP, BOX_NOISE_STD,
                                                DICE_WEIGHT, FOCAL_WEIGHT, IOU_WEIGHT, SYNTH_TRAIN_SEED_BASE,
                                                TrainSettings)

__all__ = ["TrainSettings", "Sample", "SyntheticScenes", "StoreRecords", "WithRehearsal", "split_heldout", "to_frame",
           "decode", "interactive_loss", "heldout_loss", "optimisation_step", "train", "collate",
           "measure_step_seconds", "plan_steps", "lr_at", "mask_losses", "embed_prompts",
           "dense_prompts", "error_clicks", "noisy_boxes"]
