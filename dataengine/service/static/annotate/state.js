// The annotation tool's state: one `tool` object the other modules read and change, the page's canvas, its
// viewport, and the questions every tool asks of that state (may I edit? which pre-filled masks are kept?).
// `window.annotationTool` is the same object, for the browser tests and the latency benchmark.
import { Viewport } from "../view.js";

export const $ = (selector) => document.querySelector(selector);
export const canvas = $("#canvas");
export const view = new Viewport();

let nextObjectId = 1;
export const newObjectId = () => nextObjectId++;
export const newObject = () => ({ id: newObjectId(), points: [], box: null, prediction: null, selected: 0,
                                  strokes: [] });

export const tool = {
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

export function editable() { return Boolean(tool.task) && !tool.busy && !tool.leaseLost; }

export function keptPrefill() { return tool.prefill.filter((p) => !tool.rejected.has(p.id)); }

export const round1 = (v) => Math.round(v * 10) / 10;   // prompt and stroke coordinates, in image pixels
