// The tool's settings (mode, brush size, mask visibility, overlay opacity) and the page's buttons and sliders.
import { fitView, paintAccepted, paintPrefill, refreshCurrent, scheduleRender, zoomBy } from "./canvas.js";
import { hideBanner } from "./messages.js";
import { acceptMask, clearCurrent, deleteAccepted, togglePrefill } from "./masks.js";
import { updatePanels } from "./panels.js";
import { selectCandidate } from "./prompts.js";
import { $, canvas, tool } from "./state.js";
import { openSkipDialog, skipImage, submitImage } from "./submission.js";
import { redo, undo } from "./undo.js";

export function setMode(mode) { tool.mode = mode; updatePanels(); scheduleRender(); }

export function setBrushSize(size) {
  tool.brushSize = Math.min(80, Math.max(1, size));
  $("#brush-size").value = tool.brushSize;
  $("#brush-size-value").textContent = `${tool.brushSize} px`;
  scheduleRender();
}

export function toggleMasks() { tool.masksVisible = !tool.masksVisible; scheduleRender(); }

function setOpacity(opacity) {
  tool.opacity = opacity;
  $("#opacity-value").textContent = `${Math.round(opacity * 100)}%`;
  paintPrefill(); paintAccepted(); refreshCurrent();
}

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
// the side panels' buttons (drawn again on every change, so their clicks are handled here, once)
$("#candidates").addEventListener("click", (event) => {
  const button = event.target.closest("[data-candidate]");
  if (button) selectCandidate(Number(button.dataset.candidate));
});
$("#mask-list").addEventListener("click", (event) => {
  const remove = event.target.closest("[data-delete-mask]"), toggle = event.target.closest("[data-toggle-prefill]");
  if (remove) deleteAccepted(Number(remove.dataset.deleteMask));
  else if (toggle) togglePrefill(toggle.dataset.togglePrefill);
});
