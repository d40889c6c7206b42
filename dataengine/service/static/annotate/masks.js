// The masks on the image: accepting the current one (with its effort), clearing it, rejecting or keeping a
// pre-filled mask, deleting an accepted one, and finding the mask under the cursor.
import * as rle from "../rle.js";
import { PALETTE } from "../view.js";
import { paintAccepted, paintPrefill, refreshCurrent } from "./canvas.js";
import { notice } from "./messages.js";
import { updatePanels } from "./panels.js";
import { editable, newObject, tool } from "./state.js";
import { saveDraftSoon } from "./submission.js";
import { effortOf, secondsOn } from "./timing.js";
import { pushHistory } from "./undo.js";

export function acceptMask() {
  if (!editable()) return;
  const mask = tool.composite.slice();
  const area = rle.area(mask);
  if (!area) {
    notice("Nothing to accept: the current mask is empty. Click the object (or draw a box) first.");
    return;
  }
  const current = tool.current, effort = effortOf(current.id);
  const prediction = current.prediction;
  pushHistory();
  tool.accepted = [...tool.accepted, {
    id: current.id, mask, area, segmentation: rle.encode(mask, tool.height, tool.width),
    seconds: Math.round(secondsOn(current.id) * 1000) / 1000, clicks: effort.clicks, strokes: effort.strokes,
    predicted_iou: prediction ? prediction.candidates[current.selected].predicted_iou : null,
    points: current.points.map(([x, y, label]) => [x, y, label]),
    colour: PALETTE[tool.accepted.length % PALETTE.length],
  }];
  tool.current = newObject();
  paintAccepted();
  refreshCurrent();
  updatePanels();
  saveDraftSoon();
}

export function clearCurrent() {
  if (!editable()) return;
  const c = tool.current;
  if (!c.points.length && !c.box && !c.strokes.length && !c.prediction) return;
  pushHistory();
  tool.current = newObject();   // the effort of a mask given up counts in the image's overhead
  tool.predictSeq++;
  refreshCurrent();
  updatePanels();
}

export function togglePrefill(id) {
  if (!editable()) return;
  pushHistory();
  const rejected = new Set(tool.rejected);
  if (rejected.has(id)) rejected.delete(id); else rejected.add(id);
  tool.rejected = rejected;
  paintPrefill();
  updatePanels();
  saveDraftSoon();
}

export function deleteAccepted(id) {
  if (!editable()) return;
  pushHistory();
  tool.accepted = tool.accepted.filter((m) => m.id !== id);
  paintAccepted();
  updatePanels();
  saveDraftSoon();
}

export function maskAt(list, point) {
  if (!point) return null;
  const [x, y] = point.map(Math.floor);
  if (x < 0 || y < 0 || x >= tool.width || y >= tool.height) return null;
  const hits = list.filter((m) => m.mask[y * tool.width + x]);
  return hits.length ? hits.reduce((a, b) => (b.area < a.area ? b : a)) : null;   // the most specific one
}
