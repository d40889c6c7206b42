// The keyboard shortcuts (listed in the page), and the skip dialog's number keys.
import { fitView, zoomBy } from "./canvas.js";
import { setBrushSize, setMode, toggleMasks } from "./controls.js";
import { acceptMask, clearCurrent, deleteAccepted, maskAt, togglePrefill } from "./masks.js";
import { updatePanels } from "./panels.js";
import { selectCandidate } from "./prompts.js";
import { $, tool } from "./state.js";
import { openSkipDialog, skipDialogKey, submitImage } from "./submission.js";
import { redo, undo } from "./undo.js";

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
