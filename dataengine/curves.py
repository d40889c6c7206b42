"""The loop's curves as one PNG: seconds per mask and masks per image by published batch, gold mIoU@1 by model version.

`loop_curve_data(catalog)` gathers the figures from the catalog (so the demo and the monitoring page draw the
same thing): one point per release in publication order (stage 1 and 2 batches carry the annotators' effort,
stage 3 releases their masks per image) and one point per model version that has a gold evaluation (promoted
versions filled, rejected candidates hollow). `draw_loop_curves(data)` draws them with Pillow (no plotting
library needed) and returns the PNG bytes.
"""
from __future__ import annotations

import math

STAGE_COLOURS = {"stage1": (37, 99, 235), "stage2": (234, 88, 12), "stage3": (5, 150, 105)}
PROMOTED_COLOUR, REJECTED_COLOUR = (37, 99, 235), (107, 114, 128)
PANEL_SIZE, MARGIN = (420, 400), (56, 44, 20, 58)     # panel width, height; margins left, top, right, bottom
BACKGROUND, AXIS, GRID, TEXT = (255, 255, 255), (55, 65, 81), (229, 231, 235), (17, 24, 39)
STAGE_LABELS = {"stage1": "S1", "stage2": "S2", "stage3": "S3"}


def _number(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def loop_curve_data(catalog, model_name: str | None = None) -> dict:
    """Return {"batches": [{label, stage, release_id, seconds_per_mask, masks_per_image}], "models": [{version,
    version_id, miou@1, promoted, production}]} from the catalog, in publication / registration order."""
    batches, per_stage = [], {}
    for release in catalog.list_releases():
        counts = release.counts or {}
        effort = counts.get("effort") or {}
        per_stage[release.stage] = per_stage.get(release.stage, 0) + 1
        images = counts.get("images") or 0
        masks_per_image = _number(effort.get("masks_per_image"))
        if masks_per_image is None and images:
            masks_per_image = round(counts.get("masks", 0) / images, 2)
        batches.append({"label": f"{STAGE_LABELS.get(release.stage, release.stage)} #{per_stage[release.stage]}",
                        "stage": release.stage, "release_id": release.release_id,
                        "seconds_per_mask": _number(effort.get("seconds_per_mask")),
                        "masks_per_image": masks_per_image})
    promoted = {(e.name, e.to_version) for e in catalog.model_events() if e.kind == "promotion"}
    models = []
    for row in catalog.list_model_versions(model_name):
        miou = _number(((row.metrics or {}).get("gold") or {}).get("miou@1"))
        if miou is None:
            continue
        models.append({"version": row.version, "version_id": f"{row.name}/{row.version}", "miou@1": miou,
                       "promoted": (row.name, row.version) in promoted or row.status == "production",
                       "production": row.status == "production"})
    return {"batches": batches, "models": models}


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:            # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _nice_range(values: list[float], floor_zero: bool) -> tuple[float, float, float]:
    """Return (low, high, step) of a y axis that holds `values` with round tick steps."""
    low, high = (0.0 if floor_zero else min(values)), max(values)
    if high - low < 1e-9:
        low, high = (0.0 if floor_zero else low - 0.5 * abs(low or 1)), high + 0.5 * abs(high or 1)
    raw = (high - low) / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return math.floor(low / step) * step, math.ceil(high / step) * step, step


def _tick_digits(step: float) -> int:
    """Return the decimals that write every multiple of `step` exactly (0.005 -> 3, 2.5 -> 1, 20 -> 0)."""
    digits = 0
    while digits < 6 and abs(round(step, digits) - step) > 1e-9 * max(1.0, abs(step)):
        digits += 1
    return digits


def _panel(draw, origin: tuple[int, int], title: str, labels: list[str], points: list[dict],
           floor_zero: bool) -> None:
    """Draw one panel: title, grid, axes, x labels, and `points` ({x, y, colour, filled}) joined by a line."""
    font, small = _font(15), _font(12)
    (x0, y0), (width, height) = origin, PANEL_SIZE
    left, top, right, bottom = x0 + MARGIN[0], y0 + MARGIN[1], x0 + width - MARGIN[2], y0 + height - MARGIN[3]
    draw.text((x0 + MARGIN[0], y0 + 12), title, fill=TEXT, font=font)
    draw.rectangle([left, top, right, bottom], outline=AXIS)
    values = [p["y"] for p in points]
    if not values:
        draw.text(((left + right) // 2 - 40, (top + bottom) // 2), "no data yet", fill=REJECTED_COLOUR, font=font)
        return
    low, high, step = _nice_range(values, floor_zero)
    digits = _tick_digits(step)
    for i in range(int(round((high - low) / step)) + 1):
        value = low + i * step
        y = bottom - (value - low) / (high - low) * (bottom - top)
        if top < y < bottom:
            draw.line([left + 1, y, right - 1, y], fill=GRID)
        draw.text((x0 + 4, y - 7), f"{value:.{digits}f}", fill=TEXT, font=small)
    slot = (right - left) / max(1, len(labels))
    for i, label in enumerate(labels):
        x = left + slot * (i + 0.5)
        draw.text((x - 4 * len(label), bottom + 6 + 14 * (i % 2)), label, fill=TEXT, font=small)
    xy = [(left + slot * (p["x"] + 0.5), bottom - (p["y"] - low) / (high - low) * (bottom - top)) for p in points]
    if len(xy) > 1:
        draw.line(xy, fill=AXIS, width=1)
    for (x, y), p in zip(xy, points):
        box = [x - 5, y - 5, x + 5, y + 5]
        draw.ellipse(box, fill=p["colour"] if p["filled"] else BACKGROUND, outline=p["colour"], width=2)


def draw_loop_curves(data: dict) -> bytes:
    """Return the PNG (3 panels side by side) of `loop_curve_data`'s figures."""
    import io

    from PIL import Image, ImageDraw

    width, height = PANEL_SIZE
    image = Image.new("RGB", (3 * width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    batches = data.get("batches") or []
    labels = [b["label"] for b in batches]

    def series(field):
        return [{"x": i, "y": b[field], "colour": STAGE_COLOURS.get(b["stage"], AXIS), "filled": True}
                for i, b in enumerate(batches) if b.get(field) is not None]

    _panel(draw, (0, 0), "Seconds per mask by batch", labels, series("seconds_per_mask"), True)
    _panel(draw, (width, 0), "Masks per image by batch", labels, series("masks_per_image"), True)
    models = data.get("models") or []
    _panel(draw, (2 * width, 0), "Gold mIoU@1 by model version (filled: promoted)", [m["version"] for m in models],
           [{"x": i, "y": m["miou@1"], "colour": PROMOTED_COLOUR if m["promoted"] else REJECTED_COLOUR,
             "filled": m["promoted"]} for i, m in enumerate(models)], False)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def write_loop_curves(catalog, path, model_name: str | None = None) -> dict:
    """Draw the catalog's loop curves to the PNG file `path` (written through a temporary file); return the data."""
    import os
    from pathlib import Path

    data = loop_curve_data(catalog, model_name)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(draw_loop_curves(data))
    os.replace(tmp, path)
    return data


__all__ = ["loop_curve_data", "draw_loop_curves", "write_loop_curves", "STAGE_COLOURS"]
