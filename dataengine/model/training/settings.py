"""The settings of a training run and the paper's constants (App. A)."""
from __future__ import annotations

from dataclasses import dataclass, field

FOCAL_WEIGHT, DICE_WEIGHT, IOU_WEIGHT = 20.0, 1.0, 1.0     # paper App. A (focal:dice 20:1, MSE IoU weight 1)
BOX_NOISE_STD, BOX_NOISE_CAP = 0.1, 20.0                   # paper App. A: std 10% of the side, at most 20 px
SYNTH_TRAIN_SEED_BASE = 1_000_000_000                      # synthetic training scenes: seeds from here upwards
                                                           # (gold, demo and held-out scenes use seeds < 1e9)
BOOTSTRAP_HELDOUT_SEED_BASE = 999_000_000     # held-out loss scenes of the bootstrap run (never trained on)


@dataclass
class TrainSettings:
    """Everything that defines a training run (saved in the model card)."""

    steps: int = 2000
    images_per_step: int = 4
    masks_per_image: int = 8
    rounds: int = 5                    # decoder passes per mask: first prompt + (rounds - 1) corrective clicks
    grad_rounds: str = "all"           # "all", or "first_last_random": round 1, the last and one random other
    lr: float = 1e-3
    min_lr_fraction: float = 0.02      # cosine decay to lr * this
    warmup_steps: int = 100
    weight_decay: float = 0.01
    clip_grad: float = 1.0
    loss: str = "bce_dice"             # or "focal_dice" (the paper's 20:1)
    box_probability: float = 0.2
    center_click_probability: float = 0.5   # first and corrective clicks: protocol centre vs uniform sample
    seed: int = 0
    checkpoint_every: int = 100        # steps between resumable checkpoints
    heldout_every: int = 0             # steps between held-out loss evaluations (0: only at the end)
    heldout_images: int = 16
    num_workers: int = 1
    threads: int = 2
    time_limit_s: float = 0.0          # stop (and checkpoint) after this many seconds of this process; 0: none
    first_click_only_steps: int = 0    # curriculum: the first steps train the first prompt only (rounds = 1)
    lr_horizons: list = field(default_factory=list)   # [[until_step, horizon], ...]: before `until_step` the
                                       # cosine decays over `horizon` steps instead of `steps` (a shortened run)
    rehearsal_share: float = 0.0       # fine-tuning: this share of the images are the bootstrap's synthetic scenes
    instance_weight: float = 0.0       # weight of the instance head's discriminative loss (synthetic scenes only)
    iou_rank_weight: float = 0.0       # weight of a choice loss on the three first-click candidates: cross-entropy
                                       # of their predicted IoUs (as logits / 0.1) against the best one
    photo_share: float = 0.0           # synthetic scenes: share of textures cut from real photographs
    ema_decay: float = 0.0             # > 0: keep an exponential moving average of the weights; checkpoints use it
    curve_minutes: list = field(default_factory=list)   # keep the (EMA) weights when the run's trained minutes
                                       # pass each of these (the scaling curve), beside the state file

    def rounds_with_grad(self, rng) -> set[int]:
        """Return the round indices that get gradients in one step."""
        if self.grad_rounds == "all" or self.rounds <= 2:
            return set(range(self.rounds))
        if self.grad_rounds == "first_last_random":
            return {0, self.rounds - 1, int(rng.integers(1, self.rounds - 1))} if self.rounds > 2 else {0, 1}
        raise ValueError(f"grad_rounds {self.grad_rounds!r}: expected 'all' or 'first_last_random'")
