// The monitoring page: figures from GET api/monitoring drawn as tiles, SVG charts and tables.
// Refreshes every minute. Reports open in a frame that runs no scripts.
import { api, storeToken } from "./api.js";
import { barChart, lineChart, shortTime } from "./charts.js";

const STAGE_COLOURS = { stage1: "#60a5fa", stage2: "#fb923c", stage3: "#34d399" };
const EXTRA_COLOURS = ["#e879f9", "#facc15", "#22d3ee", "#f87171"];
const REFRESH_MS = 60_000;
// Reports are shown as saved: nothing is fetched from elsewhere (their CDN styles and scripts stay out).
const REPORT_POLICY = '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; ' +
                      'style-src \'unsafe-inline\'; img-src data:">' +
  "<style>body{font:14px/1.45 system-ui,sans-serif;margin:16px 20px;color:#1f2937}table{border-collapse:collapse;" +
  "margin:4px 0 10px}td,th{padding:3px 10px;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top}" +
  "a{color:#2563eb}img{display:none}.collapse{display:none}footer{display:none}</style>";
const $ = (selector) => document.querySelector(selector);
let latest = null, measure = "total_masks";

const stageColour = (stage, i = 0) => STAGE_COLOURS[stage] || EXTRA_COLOURS[i % EXTRA_COLOURS.length];
const stageName = (stage) => (/^stage\d+$/.test(stage) ? `Stage ${stage.slice(5)}` : stage);
const fmt = (v, digits = 2) => (v === null || v === undefined ? "—" : Number(v).toLocaleString(undefined,
  { maximumFractionDigits: digits }));
const pct = (v) => (v === null || v === undefined ? "—" : `${(100 * v).toFixed(1)}%`);

function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") element.className = value;
    else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) element.append(child);
  }
  return element;
}

/** A table cell whose raw figure is kept in data-value (the text shows it formatted). */
function figure(field, value, text = fmt(value), cls = "num") {
  return h("td", { class: cls, "data-field": field, "data-value": value ?? "" }, text);
}

function fillTable(selector, rows, emptyText, columns) {
  const body = $(`${selector} tbody`);
  body.replaceChildren(...(rows.length ? rows
    : [h("tr", { class: "empty-row" }, h("td", { colspan: columns }, emptyText))]));
}

// ---- tiles -------------------------------------------------------------------------------------------------
function tile(key, label, value, sub, cls = "") {
  return h("div", { class: `tile ${cls}`, "data-figure": key, "data-value": value },
           h("div", { class: "label" }, label), h("div", { class: "value" }, String(value)),
           h("div", { class: "sub" }, sub));
}

function renderTiles(data) {
  const tiles = [];
  for (const [stage, points] of Object.entries(data.published)) {
    const last = points[points.length - 1];
    tiles.push(tile(`published-${stage}-masks`, `${stageName(stage)} masks published`, last.total_masks,
                    `${fmt(last.total_images)} images · ${points.length} release${points.length === 1 ? "" : "s"}`));
  }
  const production = Object.entries(data.models.production);
  tiles.push(tile("production-model", "Model in production",
                  production.length ? production.map(([n, v]) => `${v}`).join(", ") : "none",
                  production.length ? production.map(([n]) => n).join(", ") : "promote a model version"));
  const gated = data.runs.find((r) => r.gate);
  if (gated) {
    tiles.push(tile("latest-gate", "Latest quality gate", gated.gate.success ? "passed" : "failed",
                    `${gated.dag_id} · ${gated.run_id}`, gated.gate.success ? "good" : "bad"));
  }
  const open = data.throughput.filter((b) => !b.done);
  tiles.push(tile("open-batches", "Annotation batches open", open.length,
                  `${open.reduce((n, b) => n + b.open + b.leased, 0)} images waiting or in progress`));
  tiles.push(tile("audit-pending", "Audit queue", data.audit.counts.pending, "images waiting for review",
                  data.audit.counts.pending ? "" : "good"));
  $("#tiles").replaceChildren(...tiles);
}

// ---- charts ------------------------------------------------------------------------------------------------
function renderPublished(data) {
  const series = Object.entries(data.published).map(([stage, points], i) => ({
    name: stageName(stage), colour: stageColour(stage, i),
    points: points.map((p) => ({ x: new Date(p.at), y: p[measure],
      title: `${stageName(stage)} · ${p.release_id}\n${shortTime(new Date(p.at))}: +${fmt(p.images)} images, ` +
             `+${fmt(p.masks)} masks\ntotal ${fmt(p.total_images)} images, ${fmt(p.total_masks)} masks` })),
  }));
  lineChart($("#published-chart"), { series, emptyText: "Nothing published yet: releases appear here." });
}

function runLabel(run) { return run.run_id.replace(/^(manual|scheduled|backfill)__/, "").slice(0, 16); }

function renderGold(data) {
  const runs = data.runs.filter((r) => r.gold && (r.gold.mean_matched_iou !== null ||
                                                   r.gold.agreement_mean_iou !== null)).reverse();
  const metric = (name, colour, pick) => ({ name, colour, points: runs.map((r, i) => ({
    x: i, y: pick(r.gold), title: `${r.dag_id} · ${r.run_id}\n${name}: ${fmt(pick(r.gold), 3)}` })) });
  lineChart($("#gold-chart"), {
    series: [metric("mean matched IoU", "#60a5fa", (g) => g.mean_matched_iou),
             metric("share of masks IoU > 0.9", "#34d399", (g) => g.precision_at_90),
             metric("gold recall @0.75", "#fb923c", (g) => g.recall_at_75),
             metric("agreement IoU", "#e879f9", (g) => g.agreement_mean_iou)],
    yMin: 0, yMax: 1, time: false, xLabels: runs.map(runLabel),
    emptyText: "No gold comparison yet: runs with gold images in their batch show here.",
  });
}

function renderThroughputChart(data) {
  const batches = [...data.throughput].reverse();
  barChart($("#throughput-chart"), {
    bars: batches.map((b) => ({ label: b.batch, value: b.masks_per_hour, colour: stageColour(b.stage),
      title: `${b.batch} (${b.stage})\n${fmt(b.masks_per_hour, 1)} masks/hour · ${fmt(b.seconds_per_mask)} s and ` +
             `${fmt(b.clicks_per_mask)} clicks per mask` })),
    format: (v) => fmt(v, 0), emptyText: "No submissions yet.",
  });
}

function renderModelsChart(data) {
  const versions = data.models.versions.filter((v) => v.evaluation["miou@1"] !== undefined);
  barChart($("#models-chart"), {
    bars: versions.map((v) => ({ label: v.version, value: v.evaluation["miou@1"], highlight: v.production,
      colour: v.production ? "#3b9eff" : "#4b5563",
      title: `${v.version_id}${v.production ? " (production)" : ""}\nmIoU@1 ${fmt(v.evaluation["miou@1"], 3)}` })),
    height: 170, format: (v) => fmt(v, 2),
    emptyText: "No evaluation figures yet: sa_retrain evaluates each candidate on the gold set.",
  });
}

// The loop's curves come as a PNG from an authenticated route: fetched with the same credentials, shown as a blob.
let curvesUrl = null;
async function renderLoopCurves() {
  const image = $("#loop-curves");
  try {
    const url = URL.createObjectURL(await api.loopCurves());
    if (curvesUrl) URL.revokeObjectURL(curvesUrl);
    curvesUrl = url;
    image.src = url;
  } catch (error) {
    image.alt = `Could not load the loop's curves: ${error.detail}`;
  }
}

// ---- tables ------------------------------------------------------------------------------------------------
function gateCell(gate) {
  if (!gate) return h("td", { "data-field": "gate", "data-value": "" }, h("span", { class: "badge neutral" }, "not run"));
  const badge = gate.success
    ? h("span", { class: "badge good" }, `✓ passed ${gate.passed ?? ""}/${gate.evaluated ?? ""}`)
    : h("span", { class: "badge bad" }, `✗ failed ${gate.failures.length}`);
  const failures = gate.failures.length
    ? h("ul", { class: "failures" }, gate.failures.map((f) => h("li", {},
        `${f.why || f.expectation}: ${fmt(f.unexpected_count, 0)} rows`)))
    : null;
  return h("td", { "data-field": "gate", "data-value": gate.success ? "passed" : "failed" }, badge, failures);
}

function reportLinks(run) {
  const report = (run.gate && run.gate.report) || {};
  const links = Object.entries(report).map(([kind, key]) => h("a", {
    href: `api/monitoring/reports/${key}`, "data-report-key": key,
    onclick: (event) => { event.preventDefault(); openReport(key, `${run.dag_id} · ${run.run_id} · ${kind}`); },
  }, kind.toUpperCase()));
  return h("td", { class: "report-links", "data-field": "report" }, links.length ? links : "—");
}

function effortText(effort) {
  if (!effort || !effort.masks) return "—";
  const parts = [`${fmt(effort.masks, 0)} masks`];
  if (effort.seconds_per_mask !== null && effort.seconds_per_mask !== undefined) {
    parts.push(`${fmt(effort.seconds_per_mask, 1)} s/mask`);
  }
  if (effort.clicks_per_mask !== null && effort.clicks_per_mask !== undefined) {
    parts.push(`${fmt(effort.clicks_per_mask, 1)} clicks`);
  }
  return parts.join(" · ");
}

function renderRuns(data) {
  const rows = data.runs.map((run) => h("tr", { "data-run": `${run.dag_id}/${run.run_id}` },
    h("td", { class: "run" }, run.dag_id, h("small", { title: run.run_id }, run.run_id)),
    h("td", { "data-field": "stage" }, run.stage ? stageName(run.stage) : "—"),
    h("td", { "data-field": "state" }, run.state || "—"),
    gateCell(run.gate),
    figure("gold_iou", run.gold ? run.gold.mean_matched_iou : null, fmt(run.gold && run.gold.mean_matched_iou, 3)),
    h("td", { "data-field": "effort", "data-value": run.effort ? run.effort.seconds_per_mask ?? "" : "" },
      effortText(run.effort),
      run.prefill ? h("small", { class: "muted" }, ` · pre-filled ${fmt(run.prefill.masks_per_image_before, 1)} → ` +
                                                   `${fmt(run.prefill.masks_per_image_after, 1)} masks/image`) : null),
    reportLinks(run)));
  fillTable("#runs-table", rows, "No stage runs recorded yet.", 7);
}

function renderThroughputTable(data) {
  const rows = data.throughput.map((b) => {
    const done = b.submitted + b.skipped;
    return h("tr", { "data-batch": b.batch },
      h("td", {}, b.batch),
      h("td", {}, stageName(b.stage)),
      h("td", { "data-field": "progress", "data-value": done },
        h("span", { class: "bar-inline" }, h("i", { style: `width:${b.tasks ? (100 * done) / b.tasks : 0}%` })),
        `${done}/${b.tasks}${b.skipped ? ` (${b.skipped} skipped)` : ""}`),
      figure("masks", b.masks, fmt(b.masks, 0)),
      figure("masks_per_hour", b.masks_per_hour, fmt(b.masks_per_hour, 1)),
      figure("seconds_per_mask", b.seconds_per_mask, fmt(b.seconds_per_mask, 1)),
      figure("clicks_per_mask", b.clicks_per_mask),
      figure("strokes_per_mask", b.strokes_per_mask),
      figure("masks_per_image", b.masks_per_image, fmt(b.masks_per_image, 1)),
      figure("annotators", b.annotators, fmt(b.annotators, 0)));
  });
  fillTable("#throughput-table", rows, "No annotation batches yet.", 10);
}

function renderModels(data) {
  const rows = [...data.models.versions].reverse().map((v) => h("tr", { "data-version": v.version_id },
    h("td", {}, v.version_id),
    h("td", { "data-field": "status", "data-value": v.status },
      h("span", { class: `badge ${v.production ? "prod" : v.status === "candidate" ? "neutral" : "neutral"}` },
        v.production ? "★ production" : v.status),
      v.rejected.length ? h("small", { class: "muted", title: v.rejected.join("\n") }, " rejected") : null),
    h("td", {}, v.parent || "—"),
    figure("miou@1", v.evaluation["miou@1"], fmt(v.evaluation["miou@1"], 3)),
    figure("miou@5", v.evaluation["miou@5"], fmt(v.evaluation["miou@5"], 3)),
    figure("noc@90", v.evaluation["noc@90"], fmt(v.evaluation["noc@90"], 2)),
    figure("seconds_per_mask", v.evaluation.seconds_per_mask, fmt(v.evaluation.seconds_per_mask, 1))));
  fillTable("#models-table", rows, "No model registered.", 7);
  const events = [...data.models.events].reverse().slice(0, 12).map((e) => h("li", {},
    `${shortTime(new Date(e.at))} · `, h("b", {}, `${e.kind} ${e.name} ${e.from_version || "∅"} → ${e.to_version}`),
    ` by ${e.by}: ${e.reason}`));
  $("#model-events").replaceChildren(...(events.length ? events : [h("li", {}, "None yet.")]));
}

function renderAudit(data) {
  $("#audit-counts").replaceChildren(...Object.entries(data.audit.counts).map(([status, n]) =>
    h("span", { class: "chip", "data-status": status, "data-value": n }, `${status} `, h("b", {}, fmt(n, 0)))));
  const rows = data.audit.pending.map((item) => h("tr", { "data-audit-id": item.id },
    h("td", {}, h("code", {}, item.image_id)), h("td", { class: "run" }, h("small", {}, item.run_id)),
    h("td", {}, item.reason), h("td", {}, shortTime(new Date(item.created_at)))));
  fillTable("#audit-table", rows, "Nothing waiting for review.", 4);
}

// ---- reports -----------------------------------------------------------------------------------------------
async function openReport(key, title) {
  const dialog = $("#report-dialog"), body = $("#report-body");
  $("#report-title").textContent = title;
  body.replaceChildren(h("p", { class: "caption", style: "padding:14px" }, "Loading…"));
  dialog.showModal();
  try {
    const response = await api.report(key);
    const text = await response.text();
    if (key.endsWith(".json")) {
      let pretty = text;
      try { pretty = JSON.stringify(JSON.parse(text), null, 2); } catch { /* show as is */ }
      body.replaceChildren(h("pre", {}, pretty));
    } else {
      const frame = h("iframe", { sandbox: "", title });   // no scripts, no same-origin access
      frame.srcdoc = REPORT_POLICY + text;
      body.replaceChildren(frame);
    }
  } catch (error) {
    body.replaceChildren(h("p", { class: "failures", style: "padding:14px" }, `Could not load ${key}: ${error.detail}`));
  }
}

// ---- loading -----------------------------------------------------------------------------------------------
function render(data) {
  latest = data;
  $("#generated").textContent = `as of ${shortTime(new Date(data.generated_at))}`;
  renderTiles(data);
  renderPublished(data);
  renderGold(data);
  renderThroughputChart(data);
  renderRuns(data);
  renderThroughputTable(data);
  renderModelsChart(data);
  renderModels(data);
  renderAudit(data);
  document.body.dataset.loaded = data.generated_at;
}

async function load() {
  try {
    const data = await api.monitoring();
    $("#error").hidden = true;
    $("#signin").hidden = true;
    render(data);
    renderLoopCurves();
  } catch (error) {
    if (error.status === 401) {
      $("#signin").hidden = false;
      $("#error").hidden = true;
      return;
    }
    $("#error").hidden = false;
    $("#error").textContent = `Could not load the figures: ${error.detail}`;
  }
}

$("#refresh").addEventListener("click", load);
$("#signin").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("#token").value.trim();
  if (token) { storeToken(token); $("#token").value = ""; load(); }
});
for (const button of document.querySelectorAll("#published-toggle button")) {
  button.addEventListener("click", () => {
    measure = button.dataset.measure;
    for (const other of document.querySelectorAll("#published-toggle button")) other.classList.toggle("active", other === button);
    if (latest) renderPublished(latest);
  });
}
let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => { if (latest) render(latest); }, 200);
});
setInterval(load, REFRESH_MS);
load();
