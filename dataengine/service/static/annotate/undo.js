// Undo and redo: snapshots of the accepted masks, the rejected pre-filled masks and the current mask.
import { paintAccepted, paintPrefill, refreshCurrent } from "./canvas.js";
import { updatePanels } from "./panels.js";
import { tool } from "./state.js";
import { saveDraftSoon } from "./submission.js";

const HISTORY_LIMIT = 300;

// A snapshot holds references: every change builds new arrays and objects, so nothing needs copying.
const snapshot = () => ({ accepted: tool.accepted, rejected: tool.rejected, current: tool.current });

export function pushHistory() {
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

export function undo() { if (tool.task && tool.undo.length) { tool.redo.push(snapshot()); restore(tool.undo.pop()); } }
export function redo() { if (tool.task && tool.redo.length) { tool.undo.push(snapshot()); restore(tool.redo.pop()); } }
