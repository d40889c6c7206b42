// The mouse on the canvas: a click is a point (right click or Alt: negative), a drag a box, a press in brush or
// eraser mode a stroke; middle drag or Space+drag pans, the wheel zooms.
import { beginStroke, continueStroke } from "./brush.js";
import { canvasPoint, clampX, clampY, insideImage, scheduleRender, zoomBy } from "./canvas.js";
import { updatePanels } from "./panels.js";
import { addPoint, setBox } from "./prompts.js";
import { $, canvas, tool, view } from "./state.js";

const DRAG_PIXELS = 5;               // a press that moves less than this is a click, more is a box

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
