// Drawing for the annotation tool: the viewport (zoom and pan), mask layers, and brush rasterisation.
// Masks are row-major Uint8Arrays of the image size; a MaskLayer keeps an image-sized offscreen canvas with
// the masks painted in their colours (fill at the overlay opacity, outline opaque), redrawn in place.

export const COLOURS = {
  current: [74, 222, 128],     // the mask being made: green
  prefill: [251, 146, 60],     // stage 2's pre-filled masks, kept: orange
  rejected: [239, 68, 68],     // pre-filled masks the annotator rejected: red outline only
  highlight: [255, 255, 255],
};
// Accepted masks cycle through hues far from green, orange and red.
export const PALETTE = [[96, 165, 250], [232, 121, 249], [34, 211, 238], [167, 139, 250], [244, 114, 182],
                        [129, 140, 248], [226, 232, 240]];

export function rgb([r, g, b], alpha = 1) { return `rgba(${r}, ${g}, ${b}, ${alpha})`; }

function packed([r, g, b], alpha) {
  return ((Math.round(alpha * 255) << 24) | (b << 16) | (g << 8) | r) >>> 0;
}

/** Zoom and pan: screen (CSS px) = image px * scale + offset. */
export class Viewport {
  constructor() { this.scale = 1; this.x = 0; this.y = 0; }

  /** Fit the image in the screen, keeping `bottom` px free for the zoom controls. */
  fit(width, height, screenWidth, screenHeight, margin = 16, bottom = 46) {
    this.scale = Math.min((screenWidth - 2 * margin) / width, (screenHeight - margin - bottom) / height);
    this.x = (screenWidth - width * this.scale) / 2;
    this.y = margin + (screenHeight - margin - bottom - height * this.scale) / 2;
  }

  zoomAt(factor, sx, sy, min = 0.05, max = 40) {
    const scale = Math.min(max, Math.max(min, this.scale * factor));
    this.x = sx - (sx - this.x) * (scale / this.scale);
    this.y = sy - (sy - this.y) * (scale / this.scale);
    this.scale = scale;
  }

  toImage(sx, sy) { return [(sx - this.x) / this.scale, (sy - this.y) / this.scale]; }
  toScreen(ix, iy) { return [ix * this.scale + this.x, iy * this.scale + this.y]; }
}

/** An image-sized offscreen canvas of painted masks. */
export class MaskLayer {
  constructor(width, height) {
    this.width = width; this.height = height;
    this.canvas = document.createElement("canvas");
    this.canvas.width = width; this.canvas.height = height;
    this.context = this.canvas.getContext("2d");
    this.pixels = this.context.createImageData(width, height);
    this.words = new Uint32Array(this.pixels.data.buffer);
  }

  /** Paint `masks` ([{mask, colour, outlineOnly, fillAlpha}], later ones on top) over a cleared layer. */
  paint(masks, opacity) {
    this.words.fill(0);
    for (const m of masks) this.#paintOne(m, opacity, 0, 0, this.width, this.height);
    this.context.putImageData(this.pixels, 0, 0);
  }

  /** Repaint one mask inside the rectangle [x0, x1) x [y0, y1) only (for brush strokes). */
  paintRegion(mask, colour, opacity, x0, y0, x1, y1) {
    x0 = Math.max(0, x0 - 1); y0 = Math.max(0, y0 - 1);
    x1 = Math.min(this.width, x1 + 1); y1 = Math.min(this.height, y1 + 1);
    if (x1 <= x0 || y1 <= y0) return;
    for (let y = y0; y < y1; y++) this.words.fill(0, y * this.width + x0, y * this.width + x1);
    if (mask) this.#paintOne({ mask, colour }, opacity, x0, y0, x1, y1);
    this.context.putImageData(this.pixels, 0, 0, x0, y0, x1 - x0, y1 - y0);
  }

  #paintOne({ mask, colour, outlineOnly = false, fillAlpha = null }, opacity, x0, y0, x1, y1) {
    const { width: w, height: h, words } = this;
    const fill = packed(colour, fillAlpha ?? opacity), edge = packed(colour, Math.min(1, 0.35 + opacity));
    for (let y = y0; y < y1; y++) {
      const row = y * w;
      for (let x = x0; x < x1; x++) {
        const i = row + x;
        if (!mask[i]) continue;
        const isEdge = x === 0 || x === w - 1 || y === 0 || y === h - 1 ||
                       !mask[i - 1] || !mask[i + 1] || !mask[i - w] || !mask[i + w];
        if (isEdge) words[i] = edge;
        else if (!outlineOnly) words[i] = fill;
      }
    }
  }
}

/** Set `value` on the pixels of a disc of `radius` at (cx, cy); return its bounding box [x0, y0, x1, y1). */
export function stampDisc(map, width, height, cx, cy, radius, value) {
  const x0 = Math.max(0, Math.floor(cx - radius)), x1 = Math.min(width, Math.ceil(cx + radius) + 1);
  const y0 = Math.max(0, Math.floor(cy - radius)), y1 = Math.min(height, Math.ceil(cy + radius) + 1);
  const r2 = radius * radius;
  for (let y = y0; y < y1; y++) {
    const dy = y + 0.5 - cy;
    for (let x = x0; x < x1; x++) {
      const dx = x + 0.5 - cx;
      if (dx * dx + dy * dy <= r2) map[y * width + x] = value;
    }
  }
  return [x0, y0, x1, y1];
}

/** Stamp discs along the segment (ax, ay)-(bx, by); return the bounding box of what changed. */
export function stampSegment(map, width, height, ax, ay, bx, by, radius, value) {
  const length = Math.hypot(bx - ax, by - ay);
  const steps = Math.max(1, Math.ceil(length / Math.max(0.5, radius / 2)));
  let box = [width, height, 0, 0];
  for (let s = 0; s <= steps; s++) {
    const t = s / steps;
    const [x0, y0, x1, y1] = stampDisc(map, width, height, ax + (bx - ax) * t, ay + (by - ay) * t, radius, value);
    box = [Math.min(box[0], x0), Math.min(box[1], y0), Math.max(box[2], x1), Math.max(box[3], y1)];
  }
  return box;
}
