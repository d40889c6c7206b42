// The annotator's session with the service: claiming a task, loading its image, masks and draft, keeping the
// lease, the batch's progress, and what an error from the service means for the session (a lost lease, a
// missing login).
import { api, ServiceError } from "../api.js";
import * as rle from "../rle.js";
import { MaskLayer, PALETTE } from "../view.js";
import { fitView, paintAccepted, paintPrefill, refreshCurrent, resizeCanvas, scheduleRender } from "./canvas.js";
import { hideBanner, showBanner, showEmpty, showSignIn } from "./messages.js";
import { updatePanels } from "./panels.js";
import { $, canvas, newObject, newObjectId, tool } from "./state.js";

const RENEW_EVERY_MS = 60_000;       // the service's default lease is 10 minutes
const CLAIM_REASONS = {
  batch_done: "This batch is done: every image is annotated or skipped. Pick another batch.",
  none_for_you: "Nothing left for you in this batch: the remaining tasks are second copies of images you " +
                "already did (they need another annotator).",
  all_leased: "Every remaining task is being worked on by someone else. Leases that lapse come back: try again " +
              "in a minute.",
  unknown_batch: "This batch has no tasks.",
};

export async function nextTask() {
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
    const id = newObjectId();
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

export function showError(error, action) {
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
