// The canvas: the current mask (the chosen candidate with brush and eraser edits on top), the mask layers, the
// image and prompts drawn through the viewport, and zooming and panning.
import * as rle from "../rle.js";
import { COLOURS, stampDisc, stampSegment } from "../view.js";
import { $, canvas, tool, view } from "./state.js";
import { notePainted } from "./timing.js";

const context = canvas.getContext("2d");

// ---- the current mask ------------------------------------------------------------------------------------------
export function editMap() {
  const current = tool.current;
  if (tool.edit.strokes !== current.strokes) {         // rebuild after undo/redo or a new object
    const map = new Uint8Array(tool.width * tool.height);
    for (const stroke of current.strokes) {
      const value = stroke.mode === "brush" ? 1 : 2;
      const [first, ...rest] = stroke.points;
      stampDisc(map, tool.width, tool.height, first[0], first[1], stroke.size, value);
      let previous = first;
      for (const point of rest) {
        stampSegment(map, tool.width, tool.height, previous[0], previous[1], point[0], point[1], stroke.size, value);
        previous = point;
      }
    }
    tool.edit = { strokes: current.strokes, map };
  }
  return tool.edit.map;
}

function candidateMask() {
  const prediction = tool.current.prediction;
  return prediction ? prediction.candidates[tool.current.selected].mask : null;
}

/** Recompute the current mask (in a rectangle, or all of it) and repaint its layer. */
export function refreshCurrent(rect = null) {
  if (!tool.task) return;
  const [x0, y0, x1, y1] = rect || [0, 0, tool.width, tool.height];
  const base = candidateMask(), edits = editMap(), out = tool.composite, w = tool.width;
  for (let y = y0; y < y1; y++) {
    for (let i = y * w + x0, end = y * w + x1; i < end; i++) {
      const edit = edits[i];
      out[i] = edit === 1 ? 1 : edit === 2 ? 0 : (base ? base[i] : 0);
    }
  }
  tool.layers.current.paintRegion(out, COLOURS.current, tool.opacity, x0, y0, x1, y1);
  scheduleRender();
}

export const currentHasMask = () => tool.composite && rle.area(tool.composite) > 0;

// ---- painting the layers -----------------------------------------------------------------------------------
export function paintAccepted() {
  if (!tool.layers) return;
  tool.layers.accepted.paint(tool.accepted.map((m) => ({ mask: m.mask, colour: m.colour })), tool.opacity);
  scheduleRender();
}

export function paintPrefill() {
  if (!tool.layers) return;
  tool.layers.prefill.paint(tool.prefill.map((p) => tool.rejected.has(p.id)
    ? { mask: p.mask, colour: COLOURS.rejected, outlineOnly: true }
    : { mask: p.mask, colour: COLOURS.prefill }), tool.opacity);
  scheduleRender();
}

let renderPending = false;
export function scheduleRender() {
  if (!renderPending) { renderPending = true; requestAnimationFrame(render); }
}

export function resizeCanvas() {
  const box = canvas.parentElement.getBoundingClientRect(), ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(box.width * ratio); canvas.height = Math.round(box.height * ratio);
  canvas.style.width = `${box.width}px`; canvas.style.height = `${box.height}px`;
  scheduleRender();
}

function render() {
  renderPending = false;
  const ratio = window.devicePixelRatio || 1;
  context.setTransform(1, 0, 0, 1, 0, 0);
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (!tool.task || !tool.image) return;
  context.setTransform(ratio * view.scale, 0, 0, ratio * view.scale, ratio * view.x, ratio * view.y);
  context.imageSmoothingEnabled = view.scale < 2;
  context.drawImage(tool.image, 0, 0);
  if (tool.masksVisible) {
    context.imageSmoothingEnabled = false;
    context.drawImage(tool.layers.prefill.canvas, 0, 0);
    context.drawImage(tool.layers.accepted.canvas, 0, 0);
    context.drawImage(tool.layers.current.canvas, 0, 0);
  }
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  drawPrompts();
  drawPointerExtras();
  $("#zoom-level").textContent = `${Math.round(view.scale * 100)}%`;
  notePainted();
}

function drawPrompts() {
  const { box, points } = tool.current;
  if (box) {
    const [ax, ay] = view.toScreen(box[0], box[1]), [bx, by] = view.toScreen(box[2], box[3]);
    context.save();
    context.strokeStyle = "rgba(250, 204, 21, 0.95)"; context.lineWidth = 2; context.setLineDash([6, 4]);
    context.strokeRect(ax, ay, bx - ax, by - ay);
    context.restore();
  }
  for (const [x, y, label] of points) {
    const [sx, sy] = view.toScreen(x, y);
    context.beginPath(); context.arc(sx, sy, 7, 0, 2 * Math.PI);
    context.fillStyle = label ? "#16a34a" : "#dc2626"; context.fill();
    context.lineWidth = 2; context.strokeStyle = "#fff"; context.stroke();
    context.beginPath();
    context.moveTo(sx - 3.5, sy); context.lineTo(sx + 3.5, sy);
    if (label) { context.moveTo(sx, sy - 3.5); context.lineTo(sx, sy + 3.5); }
    context.stroke();
  }
}

function drawPointerExtras() {
  const pointer = tool.pointer;
  if (pointer && pointer.kind === "press" && pointer.dragging) {
    const [ax, ay] = view.toScreen(...pointer.startImage), [bx, by] = view.toScreen(...pointer.lastImage);
    context.save();
    context.strokeStyle = "rgba(250, 204, 21, 0.95)"; context.lineWidth = 1.5; context.setLineDash([4, 3]);
    context.fillStyle = "rgba(250, 204, 21, 0.08)";
    context.fillRect(ax, ay, bx - ax, by - ay); context.strokeRect(ax, ay, bx - ax, by - ay);
    context.restore();
  }
  if ((tool.mode === "brush" || tool.mode === "eraser") && tool.hover && !tool.spaceHeld) {
    const [sx, sy] = view.toScreen(tool.hover[0], tool.hover[1]);
    context.beginPath(); context.arc(sx, sy, Math.max(1, tool.brushSize * view.scale), 0, 2 * Math.PI);
    context.lineWidth = 1.5;
    context.strokeStyle = tool.mode === "brush" ? "rgba(74, 222, 128, 0.95)" : "rgba(248, 113, 113, 0.95)";
    context.stroke();
  }
}

// ---- view -----------------------------------------------------------------------------------------------------
export function fitView() {
  if (!tool.task) return;
  const box = canvas.getBoundingClientRect();
  view.fit(tool.width, tool.height, box.width, box.height);
  scheduleRender();
}

export function zoomBy(factor, sx, sy) {
  const box = canvas.getBoundingClientRect();
  view.zoomAt(factor, sx ?? box.width / 2, sy ?? box.height / 2);
  scheduleRender();
}

export function canvasPoint(event) {
  const box = canvas.getBoundingClientRect();
  return [event.clientX - box.left, event.clientY - box.top];
}

export function insideImage([x, y]) { return x >= 0 && y >= 0 && x <= tool.width && y <= tool.height; }
export const clampX = (x) => Math.min(tool.width, Math.max(0, x));
export const clampY = (y) => Math.min(tool.height, Math.max(0, y));
