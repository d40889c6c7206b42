// Points and boxes: each prompt goes to the service's predict route (with the chosen candidate's logits as
// mask_input), and the three candidates come back; one is chosen, the best non-empty by predicted IoU.
import { api } from "../api.js";
import * as rle from "../rle.js";
import { refreshCurrent, scheduleRender } from "./canvas.js";
import { updatePanels } from "./panels.js";
import { showError } from "./session.js";
import { editable, round1, tool } from "./state.js";
import { effortOf, startTimer } from "./timing.js";
import { pushHistory } from "./undo.js";

export function addPoint(x, y, label, t0) {
  if (!editable()) return;
  const effort = effortOf(tool.current.id);
  startTimer(effort); effort.clicks++;
  pushHistory();
  tool.current = { ...tool.current, points: [...tool.current.points, [round1(x), round1(y), label]] };
  scheduleRender();
  predict(t0);
}

export function setBox(x0, y0, x1, y1, t0) {
  if (!editable()) return;
  const effort = effortOf(tool.current.id);
  startTimer(effort); effort.clicks++;
  pushHistory();
  tool.current = { ...tool.current, box: [round1(x0), round1(y0), round1(x1), round1(y1)] };
  scheduleRender();
  predict(t0);
}

async function predict(t0, retryWithoutMask = false) {
  const current = tool.current, task = tool.task;
  if (!current.points.length && !current.box) return;
  const seq = ++tool.predictSeq;
  const previous = current.prediction;
  const maskInput = !retryWithoutMask && previous ? previous.candidates[current.selected].logits : null;
  const prompt = { points: current.points.map(([x, y]) => [x, y]), labels: current.points.map((p) => p[2]),
                   box: current.box, mask_input: maskInput, multimask: true };
  let answer;
  try {
    answer = await api.predict(task.task_id, prompt);
  } catch (error) {
    if (seq !== tool.predictSeq || tool.task !== task) return;
    if (error.status === 409 && maskInput && /mask_input/.test(error.detail)) return predict(t0, true);
    return showError(error, "predict");
  }
  if (seq !== tool.predictSeq || tool.task !== task || tool.current.id !== current.id) return;   // stale
  const candidates = answer.candidates.map((c) => ({ ...c, mask: rle.decode(c.segmentation) }));
  // the best predicted IoU, unless that candidate is empty: then the best non-empty one
  const order = candidates.map((c, i) => i).sort((i, j) => candidates[j].predicted_iou - candidates[i].predicted_iou);
  const selected = candidates[answer.best ?? 0]?.area ? answer.best ?? 0 : order.find((i) => candidates[i].area) ?? 0;
  tool.current = { ...tool.current, prediction: { seq, candidates, best: answer.best }, selected };
  if (t0 !== undefined) tool.pendingLatency = { seq, t0, serverMs: answer.elapsed_ms };
  refreshCurrent();
  updatePanels();
}

export function selectCandidate(index) {
  const prediction = tool.current.prediction;
  if (!prediction || !editable()) return;
  const n = prediction.candidates.length;
  const selected = ((index % n) + n) % n;
  if (selected === tool.current.selected) return;
  pushHistory();
  tool.current = { ...tool.current, selected };
  refreshCurrent();
  updatePanels();
}
