"""Random audits: a seeded share of a run's images is queued for human review (SAM paper section 5)."""
from __future__ import annotations

import hashlib
import math


def sample_for_audit(image_ids: list[str], share: float, seed: int | str) -> list[str]:
    """Return ceil(share * n) image ids chosen by a seeded hash order (same input -> same sample)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"audit share must be within [0, 1], got {share}")
    unique = sorted(set(image_ids))
    count = math.ceil(share * len(unique))
    ranked = sorted(unique, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    return sorted(ranked[:count])
