// Brush and eraser: strokes painted into the current mask's edit map (1 = add, 2 = erase), a later stroke
// winning over an earlier one.
import { stampDisc, stampSegment } from "../view.js";
import { editMap, refreshCurrent } from "./canvas.js";
import { updatePanels } from "./panels.js";
import { editable, round1, tool } from "./state.js";
import { effortOf, startTimer } from "./timing.js";
import { pushHistory } from "./undo.js";

export function beginStroke(x, y) {
  if (!editable()) return null;
  const effort = effortOf(tool.current.id);
  startTimer(effort); effort.strokes++;
  pushHistory();
  const map = editMap();
  const stroke = { mode: tool.mode, size: tool.brushSize, points: [[round1(x), round1(y)]] };
  tool.current = { ...tool.current, strokes: [...tool.current.strokes, stroke] };
  tool.edit = { strokes: tool.current.strokes, map };
  const value = stroke.mode === "brush" ? 1 : 2;
  const [x0, y0, x1, y1] = stampDisc(map, tool.width, tool.height, x, y, stroke.size, value);
  refreshCurrent([x0, y0, x1, y1]);
  updatePanels();
  return stroke;
}

export function continueStroke(stroke, x, y) {
  const [px, py] = stroke.points[stroke.points.length - 1];
  stroke.points.push([round1(x), round1(y)]);
  const value = stroke.mode === "brush" ? 1 : 2;
  const rect = stampSegment(tool.edit.map, tool.width, tool.height, px, py, x, y, stroke.size, value);
  refreshCurrent(rect);
}
