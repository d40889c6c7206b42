// The annotation tool: claim a task, make masks with clicks, a box, brush and eraser, accept them, submit.
// Every mask carries what the tool measured: seconds from its first prompt to accepting it, clicks (points and
// boxes) and brush/eraser strokes, counted as made (an undone click still took effort).
//
// This entry signs the annotator in, lets them pick a batch and starts the session; the work is done by the
// modules in annotate/ (state, timing, canvas, messages, panels, session, submission, undo, prompts, brush,
// masks, controls, pointer, keyboard), which import one another without a cycle.
import { api, forgetToken, storedToken, storeToken } from "./api.js";
import { resizeCanvas } from "./annotate/canvas.js";
import "./annotate/controls.js";
import "./annotate/keyboard.js";
import { hideBanner, showBanner, showEmpty, showSignIn } from "./annotate/messages.js";
import { updatePanels } from "./annotate/panels.js";
import "./annotate/pointer.js";
import { nextTask, showError } from "./annotate/session.js";
import { $, tool } from "./annotate/state.js";
import { updateTimer } from "./annotate/timing.js";

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
