// The annotation tool: claim a task, make masks with clicks, a box, brush and eraser, accept them, submit.
// Every mask carries what the tool measured: seconds from its first prompt to accepting it, clicks (points and
// boxes) and brush/eraser strokes, counted as made (an undone click still took effort).
import { api, forgetToken, newSubmissionId, ServiceError, storedToken, storeToken } from "./api.js";
import * as rle from "./rle.js";
import { COLOURS, MaskLayer, PALETTE, rgb, stampDisc, stampSegment, Viewport } from "./view.js";

const SLOW_MASK_SECONDS = 30;        // SAM paper, stage 1: move on to the next image once a mask took over 30 s
const WARN_SECONDS = 20;
const RENEW_EVERY_MS = 60_000;       // the service's default lease is 10 minutes
const DRAG_PIXELS = 5;               // a press that moves less than this is a click, more is a box
const HISTORY_LIMIT = 300;
const CLAIM_REASONS = {
  batch_done: "This batch is done: every image is annotated or skipped. Pick another batch.",
  none_for_you: "Nothing left for you in this batch: the remaining tasks are second copies of images you " +
                "already did (they need another annotator).",
  all_leased: "Every remaining task is being worked on by someone else. Leases that lapse come back: try again " +
              "in a minute.",
  unknown_batch: "This batch has no tasks.",
};

const $ = (selector) => document.querySelector(selector);
const canvas = $("#canvas");
const context = canvas.getContext("2d");
const view = new Viewport();

let nextObjectId = 1;
const newObject = () => ({ id: nextObjectId++, points: [], box: null, prediction: null, selected: 0, strokes: [] });

const tool = {
  annotator: null, batch: null, task: null, image: null, width: 0, height: 0,
  accepted: [], prefill: [], rejected: new Set(), current: newObject(),
  undo: [], redo: [], effort: new Map(),
  mode: "prompt", brushSize: 8, opacity: 0.45, masksVisible: true,
  imageStartedAt: 0, submissionId: null, leaseTimer: null, busy: false, leaseLost: false,
  predictSeq: 0, pendingLatency: null, latencies: [],
  layers: null, edit: { strokes: null, map: null }, composite: null,
  pointer: null, hover: null, spaceHeld: false, confirmSubmitUntil: 0, draftTimer: null,
};
tool.view = view;
window.annotationTool = tool;   // for the browser tests and the latency benchmark

// ---- effort ------------------------------------------------------------------------------------------------
function effortOf(objectId) {
  if (!tool.effort.has(objectId)) tool.effort.set(objectId, { started: null, clicks: 0, strokes: 0 });
  return tool.effort.get(objectId);
}

function startTimer(effort) { if (effort.started === null) effort.started = performance.now(); }

function secondsOn(objectId) {
  const effort = tool.effort.get(objectId);
  return effort && effort.started !== null ? (performance.now() - effort.started) / 1000 : 0;
}

// ---- history (undo/redo) -----------------------------------------------------------------------------------
// A snapshot holds references: every change builds new arrays and objects, so nothing needs copying.
const snapshot = () => ({ accepted: tool.accepted, rejected: tool.rejected, current: tool.current });

function pushHistory() {
  tool.undo.push(snapshot());
  if (tool.undo.length > HISTORY_LIMIT) tool.undo.shift();
  tool.redo = [];
}

function restore(state) {
  const acceptedChanged = state.accepted !== tool.accepted, rejectedChanged = state.rejected !== tool.rejected;
  tool.accepted = state.accepted; tool.rejected = state.rejected; tool.current = state.current;
  tool.predictSeq++;                     // an answer still on its way belongs to the state we left
  if (acceptedChanged) paintAccepted();
  if (rejectedChanged) paintPrefill();
  if (acceptedChanged || rejectedChanged) saveDraftSoon();
  refreshCurrent();
  updatePanels();
}

function undo() { if (tool.task && tool.undo.length) { tool.redo.push(snapshot()); restore(tool.undo.pop()); } }
function redo() { if (tool.task && tool.redo.length) { tool.undo.push(snapshot()); restore(tool.redo.pop()); } }

// ---- the current mask: the chosen candidate with brush and eraser edits on top ------------------------------
function editMap() {
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
function refreshCurrent(rect = null) {
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

const currentHasMask = () => tool.composite && rle.area(tool.composite) > 0;

// ---- painting the layers -----------------------------------------------------------------------------------
function paintAccepted() {
  if (!tool.layers) return;
  tool.layers.accepted.paint(tool.accepted.map((m) => ({ mask: m.mask, colour: m.colour })), tool.opacity);
  scheduleRender();
}

function paintPrefill() {
  if (!tool.layers) return;
  tool.layers.prefill.paint(tool.prefill.map((p) => tool.rejected.has(p.id)
    ? { mask: p.mask, colour: COLOURS.rejected, outlineOnly: true }
    : { mask: p.mask, colour: COLOURS.prefill }), tool.opacity);
  scheduleRender();
}

let renderPending = false;
function scheduleRender() {
  if (!renderPending) { renderPending = true; requestAnimationFrame(render); }
}

function resizeCanvas() {
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
  const pending = tool.pendingLatency, prediction = tool.current.prediction;
  if (pending && prediction && prediction.seq === pending.seq) {
    tool.pendingLatency = null;
    afterPaint(() => tool.latencies.push({ ms: performance.now() - pending.t0, server_ms: pending.serverMs }));
  }
}

// A message posted while a frame renders is handled once that frame is painted. One long-lived channel (a
// channel made per call can be collected before its message arrives).
const paintChannel = new MessageChannel();
const afterPaintQueue = [];
paintChannel.port1.onmessage = () => { const run = afterPaintQueue.shift(); if (run) run(); };
function afterPaint(run) { afterPaintQueue.push(run); paintChannel.port2.postMessage(0); }

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

// ---- prompts and predictions ----------------------------------------------------------------------------------
function addPoint(x, y, label, t0) {
  if (!editable()) return;
  const effort = effortOf(tool.current.id);
  startTimer(effort); effort.clicks++;
  pushHistory();
  tool.current = { ...tool.current, points: [...tool.current.points, [round1(x), round1(y), label]] };
  scheduleRender();
  predict(t0);
}

function setBox(x0, y0, x1, y1, t0) {
  if (!editable()) return;
  const effort = effortOf(tool.current.id);
  startTimer(effort); effort.clicks++;
  pushHistory();
  tool.current = { ...tool.current, box: [round1(x0), round1(y0), round1(x1), round1(y1)] };
  scheduleRender();
  predict(t0);
}

const round1 = (v) => Math.round(v * 10) / 10;

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

function selectCandidate(index) {
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

// ---- brush and eraser -------------------------------------------------------------------------------------
function beginStroke(x, y) {
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

function continueStroke(stroke, x, y) {
  const [px, py] = stroke.points[stroke.points.length - 1];
  stroke.points.push([round1(x), round1(y)]);
  const value = stroke.mode === "brush" ? 1 : 2;
  const rect = stampSegment(tool.edit.map, tool.width, tool.height, px, py, x, y, stroke.size, value);
  refreshCurrent(rect);
}

// ---- accepting, rejecting, deleting masks -----------------------------------------------------------------------
function acceptMask() {
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

function clearCurrent() {
  if (!editable()) return;
  const c = tool.current;
  if (!c.points.length && !c.box && !c.strokes.length && !c.prediction) return;
  pushHistory();
  tool.current = newObject();   // the effort of a mask given up counts in the image's overhead
  tool.predictSeq++;
  refreshCurrent();
  updatePanels();
}

function togglePrefill(id) {
  if (!editable()) return;
  pushHistory();
  const rejected = new Set(tool.rejected);
  if (rejected.has(id)) rejected.delete(id); else rejected.add(id);
  tool.rejected = rejected;
  paintPrefill();
  updatePanels();
  saveDraftSoon();
}

function deleteAccepted(id) {
  if (!editable()) return;
  pushHistory();
  tool.accepted = tool.accepted.filter((m) => m.id !== id);
  paintAccepted();
  updatePanels();
  saveDraftSoon();
}

function maskAt(list, point) {
  if (!point) return null;
  const [x, y] = point.map(Math.floor);
  if (x < 0 || y < 0 || x >= tool.width || y >= tool.height) return null;
  const hits = list.filter((m) => m.mask[y * tool.width + x]);
  return hits.length ? hits.reduce((a, b) => (b.area < a.area ? b : a)) : null;   // the most specific one
}

// ---- drafts, submit, skip ----------------------------------------------------------------------------------------
const maskPayload = (m) => ({ segmentation: m.segmentation, seconds: m.seconds, clicks: m.clicks,
                              strokes: m.strokes, origin: "manual", predicted_iou: m.predicted_iou,
                              points: m.points });

function keptPrefill() { return tool.prefill.filter((p) => !tool.rejected.has(p.id)); }

function saveDraftSoon() {
  clearTimeout(tool.draftTimer);
  const task = tool.task;
  tool.draftTimer = setTimeout(async () => {
    if (tool.task !== task || tool.leaseLost) return;
    try {
      await api.draft(task.task_id, { masks: tool.accepted.map(maskPayload), rejected_prefill: [...tool.rejected] });
    } catch (error) { if (tool.task === task) showError(error, "save the draft"); }
  }, 400);
}

async function submitImage() {
  if (!editable()) return;
  const kept = keptPrefill();
  if (!tool.accepted.length && !kept.length) {
    notice("Nothing to submit yet: accept a mask (Enter), or skip the image (S).");
    return;
  }
  if (currentHasMask() && performance.now() > tool.confirmSubmitUntil) {
    tool.confirmSubmitUntil = performance.now() + 5000;
    notice("The current mask is not accepted: press Enter to accept it first, or Shift+Enter again to submit " +
           "without it.");
    return;
  }
  const task = tool.task;
  const masks = [
    ...kept.map((p) => ({ segmentation: p.segmentation, seconds: 0, clicks: 0, strokes: 0, origin: "prefill",
                          prefill_id: p.id, predicted_iou: p.predicted_iou })),
    ...tool.accepted.map(maskPayload),
  ];
  const onImage = (performance.now() - tool.imageStartedAt) / 1000;
  const inMasks = tool.accepted.reduce((sum, m) => sum + m.seconds, 0);
  const overhead = Math.min(3600, Math.max(0, Math.round((onImage - inMasks) * 1000) / 1000));
  tool.submissionId = tool.submissionId || newSubmissionId();   // a retry sends the same id: stored once
  clearTimeout(tool.draftTimer);
  setBusy(true);
  try {
    const stored = await api.submit(task.task_id, { submission_id: tool.submissionId, masks,
                                                    rejected_prefill: [...tool.rejected], overhead_seconds: overhead });
    tool.lastSubmission = stored;
    toast(`Submitted ${stored.masks} mask${stored.masks === 1 ? "" : "s"} (${Math.round(stored.seconds)} s, ` +
          `${stored.clicks} clicks). Next image…`);
    await nextTask();
  } catch (error) {
    showError(error, "submit");
  } finally {
    setBusy(false);
  }
}

function openSkipDialog() {
  if (!editable()) return;
  const dialog = $("#skip-dialog"), warning = $("#skip-warning");
  const n = tool.accepted.length;
  warning.hidden = n === 0;
  warning.textContent = n ? `The ${n} mask${n === 1 ? "" : "s"} you accepted on this image would be dropped. ` +
                            "Under the 30 s rule, submit what you have instead (Shift+Enter)." : "";
  const slow = secondsOn(tool.current.id) > SLOW_MASK_SECONDS;
  for (const button of dialog.querySelectorAll("[data-code]")) {
    button.classList.toggle("suggested", button.dataset.code === (slow ? "mask_over_30s" : "no_objects"));
  }
  $("#skip-text").value = "";
  dialog.showModal();
  dialog.querySelector(".suggested").focus();
}

async function skipImage(code) {
  $("#skip-dialog").close();
  if (!editable()) return;
  const task = tool.task, text = $("#skip-text").value.trim();
  setBusy(true);
  try {
    await api.skip(task.task_id, code, text || null);
    toast("Image skipped. Next image…");
    await nextTask();
  } catch (error) {
    showError(error, "skip");
  } finally {
    setBusy(false);
  }
}

// ---- tasks and leases ------------------------------------------------------------------------------------------
function editable() { return Boolean(tool.task) && !tool.busy && !tool.leaseLost; }

async function nextTask() {
  stopLease();
  unloadTask();
  showEmpty("Claiming the next image…");
  const batch = tool.batch;
  let claim;
  try {
    claim = await api.claim(batch);
  } catch (error) {
    showEmpty("Could not claim a task.");
    return showError(error, "claim a task");
  }
  showProgress(claim.progress);
  if (!claim.task) { showEmpty(CLAIM_REASONS[claim.reason] || `No task: ${claim.reason}`); return; }
  await loadTask(claim.task.task_id);
  refreshProgress();
}

function unloadTask() {
  tool.task = null; tool.image = null; tool.accepted = []; tool.prefill = []; tool.rejected = new Set();
  tool.current = newObject(); tool.undo = []; tool.redo = []; tool.effort = new Map(); tool.leaseLost = false;
  tool.submissionId = null; tool.pendingLatency = null; tool.predictSeq++;
  $("#hud").hidden = true;
  updatePanels();
  scheduleRender();
}

async function loadTask(taskId) {
  let view_, blob;
  try {
    [view_, blob] = await Promise.all([api.task(taskId), api.image(taskId)]);
  } catch (error) {
    showEmpty("Could not load the task.");
    return showError(error, "load the task");
  }
  const image = await createImageBitmap(blob);
  const { width, height } = view_;
  Object.assign(tool, { task: view_, image, width, height, composite: new Uint8Array(width * height),
                        edit: { strokes: null, map: null } });
  tool.layers = { prefill: new MaskLayer(width, height), accepted: new MaskLayer(width, height),
                  current: new MaskLayer(width, height) };
  tool.prefill = view_.prefilled_masks.map((p) => ({ ...p, mask: rle.decode(p.segmentation) }));
  tool.rejected = new Set(view_.rejected_prefill || []);
  tool.accepted = view_.accepted_masks.filter((m) => m.origin !== "prefill").map((m, index) => {
    const id = nextObjectId++;
    tool.effort.set(id, { started: null, clicks: m.clicks, strokes: m.strokes });
    return { id, mask: rle.decode(m.segmentation), area: m.area, segmentation: m.segmentation, seconds: m.seconds,
             clicks: m.clicks, strokes: m.strokes, predicted_iou: m.predicted_iou, points: m.points || [],
             colour: PALETTE[index % PALETTE.length] };
  });
  tool.current = newObject();
  tool.imageStartedAt = performance.now();
  $("#empty").hidden = true;
  $("#hud").hidden = false;
  hideBanner();
  resizeCanvas();
  fitView();
  paintPrefill(); paintAccepted(); refreshCurrent();
  updatePanels();
  startLease();
  canvas.focus();
}

function startLease() {
  stopLease();
  const task = tool.task;
  tool.leaseTimer = setInterval(async () => {
    if (tool.task !== task) return stopLease();
    try { await api.renew(task.task_id); } catch (error) { showError(error, "renew the lease"); }
  }, RENEW_EVERY_MS);
}

function stopLease() { clearInterval(tool.leaseTimer); tool.leaseTimer = null; }

async function refreshProgress() {
  if (!tool.batch) return;
  try { showProgress(await api.progress(tool.batch)); } catch { /* the progress bar can wait */ }
}

function showProgress(progress) {
  if (!progress) return;
  const done = progress.submitted + progress.skipped;
  $("#progress").hidden = false;
  $("#progress-fill").style.width = `${progress.total ? (100 * done) / progress.total : 0}%`;
  let text = `${done}/${progress.total} images done`;
  if (progress.mine) text += ` · you: ${progress.mine.submissions} images, ${progress.mine.masks} masks`;
  $("#progress").title = `${progress.submitted} submitted, ${progress.skipped} skipped, ${progress.leased} being ` +
                         `annotated, ${progress.open} open`;
  if (progress.effort && progress.effort.seconds_per_mask) {
    text += ` · ${progress.effort.seconds_per_mask.toFixed(1)} s/mask`;
  }
  $("#progress-text").textContent = text;
}

// ---- messages ------------------------------------------------------------------------------------------------
function showError(error, action) {
  let text;
  const detail = error instanceof ServiceError ? error.detail : String(error && error.message || error);
  const status = error instanceof ServiceError ? error.status : -1;
  const actions = [];
  if (status === 401) {
    text = `Not signed in: ${detail}`;
    showSignIn();
  } else if (status === 403 || status === 409) {
    if (/mask_input/.test(detail)) {
      text = `Could not ${action}: ${detail}`;
    } else {
      tool.leaseLost = true;
      stopLease();
      text = `Lease lost — this image is no longer yours, so it cannot be changed or submitted. ${detail}`;
      actions.push(["Claim the next image", () => nextTask()]);
    }
  } else if (status === 422) {
    text = `The service refused to ${action}: ${detail}`;
  } else if (status === 404) {
    text = `Could not ${action}: ${detail}`;
  } else if (status === 0) {
    text = `Could not ${action}: ${detail}. Check your connection and try again.`;
  } else {
    text = `Could not ${action} (HTTP ${status}): ${detail}`;
  }
  showBanner(text, "error", actions);
  updatePanels();
}

function notice(text) { showBanner(text, "notice", []); }

function showBanner(text, kind, actions) {
  const banner = $("#banner");
  banner.className = `banner ${kind}`;
  $("#banner-text").textContent = text;
  const holder = $("#banner-actions");
  holder.replaceChildren(...actions.map(([label, run]) => {
    const button = document.createElement("button");
    button.type = "button"; button.textContent = label; button.className = "primary";
    button.addEventListener("click", () => { hideBanner(); run(); });
    return button;
  }));
  banner.hidden = false;
}

function hideBanner() { $("#banner").hidden = true; }

let toastTimer = null;
function toast(text) {
  const element = $("#toast");
  element.textContent = text; element.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { element.hidden = true; }, 2500);
}

function showEmpty(text) {
  $("#empty").hidden = false;
  $("#empty-text").textContent = text;
}

function setBusy(busy) { tool.busy = busy; document.body.classList.toggle("busy", busy); updatePanels(); }

// ---- side panels ------------------------------------------------------------------------------------------------
function updatePanels() {
  const current = tool.current, prediction = current.prediction, effort = tool.effort.get(current.id);
  $("#object-number").textContent = tool.task ? `#${tool.accepted.length + 1}` : "";
  const holder = $("#candidates");
  if (prediction) {
    holder.replaceChildren(...prediction.candidates.map((c, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "candidate" + (index === current.selected ? " selected" : "") + (c.area ? "" : " no-pixels");
      button.innerHTML = `<b>${index + 1}</b><span>IoU ${c.predicted_iou.toFixed(2)}</span>` +
                         `<small>${c.area.toLocaleString()} px</small>`;
      button.title = "predicted IoU and area of this candidate (Tab cycles)";
      button.addEventListener("click", () => selectCandidate(index));
      return button;
    }));
  } else {
    holder.innerHTML = `<p class="hint">${tool.task ? "Click the object: three candidate masks appear here." : ""}</p>`;
  }
  $("#timer-effort").textContent = effort ? `${effort.clicks} click${effort.clicks === 1 ? "" : "s"}, ` +
    `${effort.strokes} stroke${effort.strokes === 1 ? "" : "s"}` : "";
  updateTimer();

  const list = $("#mask-list");
  const items = tool.accepted.map((m, index) => {
    const li = document.createElement("li");
    li.dataset.kind = "accepted";
    li.innerHTML = `<i class="swatch" style="background:${rgb(m.colour)}"></i>` +
      `<span class="label">Mask ${index + 1}</span>` +
      `<span class="figures">${m.seconds.toFixed(1)} s · ${m.clicks} click${m.clicks === 1 ? "" : "s"}` +
      `${m.strokes ? ` · ${m.strokes} stroke${m.strokes === 1 ? "" : "s"}` : ""}</span>`;
    const remove = document.createElement("button");
    remove.type = "button"; remove.className = "quiet"; remove.textContent = "×"; remove.title = "delete this mask";
    remove.addEventListener("click", () => deleteAccepted(m.id));
    li.append(remove);
    if (m.seconds > SLOW_MASK_SECONDS) li.classList.add("slow");
    return li;
  });
  for (const p of tool.prefill) {
    const rejected = tool.rejected.has(p.id);
    const li = document.createElement("li");
    li.dataset.kind = "prefill"; li.dataset.prefillId = p.id;
    li.className = rejected ? "rejected" : "";
    const colour = rejected ? COLOURS.rejected : COLOURS.prefill;
    li.innerHTML = `<i class="swatch${rejected ? " outline" : ""}" style="--c:${rgb(colour)}"></i>` +
      `<span class="label">Pre-filled ${p.id}</span>` +
      `<span class="figures">${p.predicted_iou != null ? `IoU ${p.predicted_iou.toFixed(2)}` : ""}</span>`;
    const toggle = document.createElement("button");
    toggle.type = "button"; toggle.className = rejected ? "keep" : "reject";
    toggle.textContent = rejected ? "Keep" : "Reject";
    toggle.addEventListener("click", () => togglePrefill(p.id));
    li.append(toggle);
    items.push(li);
  }
  list.replaceChildren(...items);
  const kept = keptPrefill().length;
  $("#mask-count").textContent = tool.task ? `${tool.accepted.length + kept}` : "";
  $("#prefill-note").hidden = !tool.prefill.length;
  for (const id of ["#accept", "#clear", "#submit", "#skip", "#undo", "#redo"]) $(id).disabled = !editable();
  if (editable()) { $("#undo").disabled = !tool.undo.length; $("#redo").disabled = !tool.redo.length; }
  for (const button of document.querySelectorAll("[data-mode]")) {
    button.classList.toggle("active", button.dataset.mode === tool.mode);
    button.setAttribute("aria-checked", String(button.dataset.mode === tool.mode));
  }
  $("#hud-mode").textContent = { prompt: "Points / box", brush: "Brush", eraser: "Eraser" }[tool.mode];
  canvas.dataset.mode = tool.spaceHeld ? "pan" : tool.mode;
}

function updateTimer() {
  const seconds = secondsOn(tool.current.id);
  $("#timer-seconds").textContent = `${seconds.toFixed(1)} s`;
  $("#timer-fill").style.width = `${Math.min(100, (100 * seconds) / (SLOW_MASK_SECONDS * 1.5))}%`;
  const timer = $("#timer");
  timer.classList.toggle("warn", seconds >= WARN_SECONDS && seconds < SLOW_MASK_SECONDS);
  timer.classList.toggle("over", seconds >= SLOW_MASK_SECONDS);
  $("#timer-hint").textContent = seconds >= SLOW_MASK_SECONDS
    ? "Over 30 s on this mask: accept what you have (Enter) and submit the image (Shift+Enter) — the 30 s rule."
    : seconds >= WARN_SECONDS ? "Getting close to 30 s: accept the mask soon, or move on to the next image."
      : "The timer starts at your first click. Aim for under 30 s per mask.";
}

// ---- view -----------------------------------------------------------------------------------------------------
function fitView() {
  if (!tool.task) return;
  const box = canvas.getBoundingClientRect();
  view.fit(tool.width, tool.height, box.width, box.height);
  scheduleRender();
}

function zoomBy(factor, sx, sy) {
  const box = canvas.getBoundingClientRect();
  view.zoomAt(factor, sx ?? box.width / 2, sy ?? box.height / 2);
  scheduleRender();
}

function canvasPoint(event) {
  const box = canvas.getBoundingClientRect();
  return [event.clientX - box.left, event.clientY - box.top];
}

function insideImage([x, y]) { return x >= 0 && y >= 0 && x <= tool.width && y <= tool.height; }
const clampX = (x) => Math.min(tool.width, Math.max(0, x));
const clampY = (y) => Math.min(tool.height, Math.max(0, y));

// ---- mouse ----------------------------------------------------------------------------------------------------
canvas.addEventListener("contextmenu", (event) => event.preventDefault());

canvas.addEventListener("pointerdown", (event) => {
  if (!tool.task) return;
  canvas.focus();
  const screen = canvasPoint(event), image = view.toImage(...screen);
  if (event.button === 1 || (event.button === 0 && tool.spaceHeld)) {
    tool.pointer = { kind: "pan", last: screen };
  } else if (event.button === 0 && (tool.mode === "brush" || tool.mode === "eraser")) {
    const stroke = beginStroke(image[0], image[1]);
    if (stroke) tool.pointer = { kind: "stroke", stroke };
  } else if (event.button === 0 || event.button === 2) {
    tool.pointer = { kind: "press", button: event.button, alt: event.altKey, startScreen: screen,
                     startImage: image, lastImage: image, dragging: false };
  } else {
    return;
  }
  canvas.setPointerCapture(event.pointerId);
  event.preventDefault();
});

canvas.addEventListener("pointermove", (event) => {
  if (!tool.task) return;
  const screen = canvasPoint(event), image = view.toImage(...screen);
  tool.hover = image;
  $("#hud-cursor").textContent = insideImage(image) ? `${Math.floor(image[0])}, ${Math.floor(image[1])}` : "";
  const pointer = tool.pointer;
  if (pointer && pointer.kind === "pan") {
    view.x += screen[0] - pointer.last[0]; view.y += screen[1] - pointer.last[1];
    pointer.last = screen;
  } else if (pointer && pointer.kind === "stroke") {
    continueStroke(pointer.stroke, image[0], image[1]);
  } else if (pointer && pointer.kind === "press" && pointer.button === 0) {
    pointer.lastImage = image;
    const moved = Math.hypot(screen[0] - pointer.startScreen[0], screen[1] - pointer.startScreen[1]);
    if (moved > DRAG_PIXELS) pointer.dragging = true;
  }
  scheduleRender();
});

canvas.addEventListener("pointerup", (event) => {
  const pointer = tool.pointer;
  tool.pointer = null;
  if (!pointer || !tool.task) return;
  const t0 = performance.now();
  if (pointer.kind === "stroke") { updatePanels(); return; }
  if (pointer.kind !== "press") return;
  if (pointer.dragging) {
    const [ax, ay] = pointer.startImage, [bx, by] = view.toImage(...canvasPoint(event));
    const x0 = clampX(Math.min(ax, bx)), x1 = clampX(Math.max(ax, bx));
    const y0 = clampY(Math.min(ay, by)), y1 = clampY(Math.max(ay, by));
    if (x1 - x0 >= 2 && y1 - y0 >= 2) setBox(x0, y0, x1, y1, t0);
    else scheduleRender();
    return;
  }
  const [x, y] = pointer.startImage;
  if (!insideImage([x, y])) return;
  addPoint(x, y, pointer.button === 2 || pointer.alt ? 0 : 1, t0);
});

canvas.addEventListener("pointerleave", () => { tool.hover = null; scheduleRender(); });

canvas.addEventListener("wheel", (event) => {
  if (!tool.task) return;
  event.preventDefault();
  const [sx, sy] = canvasPoint(event);
  zoomBy(Math.exp(-event.deltaY * (event.deltaMode === 1 ? 0.05 : 0.0015)), sx, sy);
}, { passive: false });

// ---- keyboard ----------------------------------------------------------------------------------------------------
document.addEventListener("keydown", (event) => {
  const target = event.target;
  if ($("#skip-dialog").open) return skipDialogKey(event);
  if (target instanceof HTMLInputElement && target.type !== "range" || target instanceof HTMLSelectElement ||
      target instanceof HTMLTextAreaElement) return;
  const key = event.key, ctrl = event.ctrlKey || event.metaKey;
  if (ctrl && (key === "z" || key === "Z")) { event.preventDefault(); return event.shiftKey ? redo() : undo(); }
  if (ctrl && (key === "y" || key === "Y")) { event.preventDefault(); return redo(); }
  if (ctrl || event.altKey) return;
  const handled = {
    Tab: () => selectCandidate(tool.current.selected + (event.shiftKey ? -1 : 1)),
    Enter: () => (event.shiftKey ? submitImage() : acceptMask()),
    Escape: () => clearCurrent(),
    s: openSkipDialog, S: openSkipDialog,
    b: () => setMode("brush"), B: () => setMode("brush"),
    e: () => setMode("eraser"), E: () => setMode("eraser"),
    v: () => setMode("prompt"), V: () => setMode("prompt"),
    "[": () => setBrushSize(tool.brushSize - Math.max(1, Math.round(tool.brushSize / 6))),
    "]": () => setBrushSize(tool.brushSize + Math.max(1, Math.round(tool.brushSize / 6))),
    "+": () => zoomBy(1.25), "=": () => zoomBy(1.25), "-": () => zoomBy(0.8), "0": fitView,
    "1": () => selectCandidate(0), "2": () => selectCandidate(1), "3": () => selectCandidate(2),
    h: toggleMasks, H: toggleMasks,
    r: () => { const p = maskAt(tool.prefill, tool.hover); if (p) togglePrefill(p.id); },
    R: () => { const p = maskAt(tool.prefill, tool.hover); if (p) togglePrefill(p.id); },
    Delete: () => { const m = maskAt(tool.accepted, tool.hover); if (m) deleteAccepted(m.id); },
    Backspace: () => { const m = maskAt(tool.accepted, tool.hover); if (m) deleteAccepted(m.id); },
    " ": () => { if (!tool.spaceHeld) { tool.spaceHeld = true; updatePanels(); } },
  }[key];
  if (!handled || !tool.task) return;
  event.preventDefault();
  handled();
});

document.addEventListener("keyup", (event) => {
  if (event.key === " ") { tool.spaceHeld = false; updatePanels(); }
});

function skipDialogKey(event) {
  const codes = { 1: "mask_over_30s", 2: "no_objects", 3: "bad_image", 4: "other" };
  if (event.target === $("#skip-text")) {
    if (event.key === "Enter") { event.preventDefault(); skipImage("other"); }
    return;
  }
  if (codes[event.key]) { event.preventDefault(); skipImage(codes[event.key]); }
}

function setMode(mode) { tool.mode = mode; updatePanels(); scheduleRender(); }

function setBrushSize(size) {
  tool.brushSize = Math.min(80, Math.max(1, size));
  $("#brush-size").value = tool.brushSize;
  $("#brush-size-value").textContent = `${tool.brushSize} px`;
  scheduleRender();
}

function toggleMasks() { tool.masksVisible = !tool.masksVisible; scheduleRender(); }

function setOpacity(opacity) {
  tool.opacity = opacity;
  $("#opacity-value").textContent = `${Math.round(opacity * 100)}%`;
  paintPrefill(); paintAccepted(); refreshCurrent();
}

// ---- controls ----------------------------------------------------------------------------------------------------
$("#accept").addEventListener("click", acceptMask);
$("#clear").addEventListener("click", clearCurrent);
$("#submit").addEventListener("click", submitImage);
$("#skip").addEventListener("click", openSkipDialog);
$("#undo").addEventListener("click", undo);
$("#redo").addEventListener("click", redo);
$("#zoom-in").addEventListener("click", () => zoomBy(1.25));
$("#zoom-out").addEventListener("click", () => zoomBy(0.8));
$("#zoom-fit").addEventListener("click", fitView);
$("#banner-close").addEventListener("click", hideBanner);
$("#brush-size").addEventListener("input", (event) => setBrushSize(Number(event.target.value)));
$("#opacity").addEventListener("input", (event) => setOpacity(Number(event.target.value) / 100));
for (const button of document.querySelectorAll("[data-mode]")) {
  button.addEventListener("click", () => { setMode(button.dataset.mode); canvas.focus(); });
}
for (const button of document.querySelectorAll("#skip-dialog [data-code]")) {
  button.addEventListener("click", () => skipImage(button.dataset.code));
}
$("#start").addEventListener("click", () => {
  tool.batch = $("#batch").value;
  if (!tool.batch) return;
  sessionStorage.setItem("dataengine.batch", tool.batch);
  const url = new URL(window.location.href);
  url.searchParams.set("batch", tool.batch);
  history.replaceState(null, "", url);
  if (tool.task && !tool.leaseLost) {
    api.release(tool.task.task_id).catch(() => {});   // switching batches gives the image back
  }
  nextTask();
});
$("#signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("#token").value.trim();
  if (!token) return;
  storeToken(token);
  $("#token").value = "";
  start();
});
$("#signout").addEventListener("click", () => { forgetToken(); window.location.reload(); });
window.addEventListener("resize", () => { resizeCanvas(); });
setInterval(() => { if (tool.task) updateTimer(); }, 200);

function showSignIn() {
  $("#signin").hidden = false;
  $("#empty").hidden = false;
  $("#empty-text").textContent = "";
  $("#token").focus();
}

// ---- start -------------------------------------------------------------------------------------------------------
async function start() {
  hideBanner();
  try {
    tool.annotator = (await api.me()).annotator;
  } catch (error) {
    if (error.status === 401) {
      if (storedToken()) {
        forgetToken();
        showBanner(`That token was not accepted: ${error.detail}`, "error", []);
      }
      return showSignIn();
    }
    showEmpty("The annotation service did not answer.");
    return showError(error, "reach the service");
  }
  $("#signin").hidden = true;
  $("#who").textContent = tool.annotator;
  $("#signout").hidden = !storedToken();
  let batches;
  try {
    batches = await api.batches();
  } catch (error) {
    return showError(error, "list the batches");
  }
  const select = $("#batch");
  select.replaceChildren(...batches.map((b) => {
    const option = document.createElement("option");
    option.value = b.batch;
    option.textContent = `${b.batch} — ${b.stage}, ${b.submitted + b.skipped}/${b.total} done${b.done ? " ✓" : ""}`;
    return option;
  }));
  $(".batch-picker").hidden = false;
  $("#start").hidden = false;
  if (!batches.length) {
    showEmpty("No annotation batches yet. A stage 1 or stage 2 DAG run opens one.");
    return;
  }
  const wanted = new URL(window.location.href).searchParams.get("batch") || sessionStorage.getItem("dataengine.batch");
  const open = batches.find((b) => b.batch === wanted) || batches.find((b) => !b.done) || batches[0];
  select.value = open.batch;
  if (wanted && open.batch === wanted) {
    $("#start").click();
  } else {
    showEmpty("Pick a batch and press Start: the tool claims the next image for you.");
  }
}

resizeCanvas();
updatePanels();
start();
