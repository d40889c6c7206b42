// Timing: the seconds, clicks and strokes of each mask (from its first prompt to accepting it, counted as made:
// an undone click still took effort), the timer with the 30 s rule, and the click-to-painted latency.
import { $, tool } from "./state.js";

export const SLOW_MASK_SECONDS = 30; // SAM paper, stage 1: move on to the next image once a mask took over 30 s
const WARN_SECONDS = 20;

export function effortOf(objectId) {
  if (!tool.effort.has(objectId)) tool.effort.set(objectId, { started: null, clicks: 0, strokes: 0 });
  return tool.effort.get(objectId);
}

export function startTimer(effort) { if (effort.started === null) effort.started = performance.now(); }

export function secondsOn(objectId) {
  const effort = tool.effort.get(objectId);
  return effort && effort.started !== null ? (performance.now() - effort.started) / 1000 : 0;
}

export function updateTimer() {
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

// A message posted while a frame renders is handled once that frame is painted. One long-lived channel (a
// channel made per call can be collected before its message arrives).
const paintChannel = new MessageChannel();
const afterPaintQueue = [];
paintChannel.port1.onmessage = () => { const run = afterPaintQueue.shift(); if (run) run(); };
function afterPaint(run) { afterPaintQueue.push(run); paintChannel.port2.postMessage(0); }

/** Called after each render: once the awaited prediction is on screen, record click -> painted (ms). */
export function notePainted() {
  const pending = tool.pendingLatency, prediction = tool.current.prediction;
  if (pending && prediction && prediction.seq === pending.seq) {
    tool.pendingLatency = null;
    afterPaint(() => tool.latencies.push({ ms: performance.now() - pending.t0, server_ms: pending.serverMs }));
  }
}
