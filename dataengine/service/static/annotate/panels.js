// The side panels: the current mask's candidates and effort, the masks on the image, which buttons are enabled.
// Drawing only: the buttons carry data attributes (data-candidate, data-delete-mask, data-toggle-prefill) and
// controls.js handles their clicks.
import { COLOURS, rgb } from "../view.js";
import { $, canvas, editable, keptPrefill, tool } from "./state.js";
import { SLOW_MASK_SECONDS, updateTimer } from "./timing.js";

export function updatePanels() {
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
      button.dataset.candidate = index;                 // clicks: controls.js
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
    remove.dataset.deleteMask = m.id;
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
    toggle.dataset.togglePrefill = p.id;
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
