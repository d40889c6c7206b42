// Handing work back: the draft saved as masks are accepted, submitting the image (with its effort figures), and
// skipping it with a reason.
import { api, newSubmissionId } from "../api.js";
import { currentHasMask } from "./canvas.js";
import { notice, toast } from "./messages.js";
import { updatePanels } from "./panels.js";
import { nextTask, showError } from "./session.js";
import { $, editable, keptPrefill, tool } from "./state.js";
import { SLOW_MASK_SECONDS, secondsOn } from "./timing.js";

const maskPayload = (m) => ({ segmentation: m.segmentation, seconds: m.seconds, clicks: m.clicks,
                              strokes: m.strokes, origin: "manual", predicted_iou: m.predicted_iou,
                              points: m.points });

export function saveDraftSoon() {
  clearTimeout(tool.draftTimer);
  const task = tool.task;
  tool.draftTimer = setTimeout(async () => {
    if (tool.task !== task || tool.leaseLost) return;
    try {
      await api.draft(task.task_id, { masks: tool.accepted.map(maskPayload), rejected_prefill: [...tool.rejected] });
    } catch (error) { if (tool.task === task) showError(error, "save the draft"); }
  }, 400);
}

export async function submitImage() {
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

export function openSkipDialog() {
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

export async function skipImage(code) {
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

export function skipDialogKey(event) {
  const codes = { 1: "mask_over_30s", 2: "no_objects", 3: "bad_image", 4: "other" };
  if (event.target === $("#skip-text")) {
    if (event.key === "Enter") { event.preventDefault(); skipImage("other"); }
    return;
  }
  if (codes[event.key]) { event.preventDefault(); skipImage(codes[event.key]); }
}

function setBusy(busy) { tool.busy = busy; document.body.classList.toggle("busy", busy); updatePanels(); }
