// Small SVG charts for the monitoring page: a line chart over time (or over runs) and a bar chart.
// Each point and bar carries a <title>, so hovering shows the exact figure.
const SVG = "http://www.w3.org/2000/svg";

function svg(name, attributes = {}, parent = null) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (parent) parent.append(element);
  return element;
}

function niceStep(span, ticks) {
  const raw = span / Math.max(1, ticks), power = 10 ** Math.floor(Math.log10(raw || 1));
  return [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
}

function yScale(values, { min = 0, max = null }, height, top) {
  let high = max ?? Math.max(...values, min + 1e-9);
  const step = niceStep(high - min, 4);
  if (max === null) high = Math.ceil(high / step) * step || step;
  const ticks = [];
  for (let v = min; v <= high + step / 1e6; v += step) ticks.push(v);
  return { map: (v) => top + height - ((v - min) / (high - min || 1)) * height, ticks };
}

const defaultFormat = (v) => (Math.abs(v) >= 1000 ? Math.round(v).toLocaleString() : +v.toFixed(3) + "");

function frame(container, height) {
  container.replaceChildren();
  const width = Math.max(280, container.clientWidth || 560);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "chart", role: "img" }, container);
  return { root, width };
}

function empty(container, text) {
  container.replaceChildren();
  const p = document.createElement("p");
  p.className = "chart-empty"; p.textContent = text;
  container.append(p);
}

/** Draw lines: series [{name, colour, points: [{x: number | Date, y, title}]}]; `xLabels` for index axes. */
export function lineChart(container, { series, height = 220, format = defaultFormat, yMin = 0, yMax = null,
                                       time = true, xLabels = null, emptyText = "No data yet." }) {
  const all = series.flatMap((s) => s.points.filter((p) => p.y !== null && p.y !== undefined));
  if (!all.length) return empty(container, emptyText);
  const { root, width } = frame(container, height);
  const margin = { left: 52, right: 16, top: 12, bottom: 30 };
  const innerW = width - margin.left - margin.right, innerH = height - margin.top - margin.bottom;
  const xs = all.map((p) => +p.x);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (x0 === x1) { x0 -= time ? 3600e3 : 1; x1 += time ? 3600e3 : 1; }
  const xMap = (x) => margin.left + ((+x - x0) / (x1 - x0)) * innerW;
  const y = yScale(all.map((p) => p.y), { min: yMin, max: yMax }, innerH, margin.top);
  for (const tick of y.ticks) {
    const ty = y.map(tick);
    svg("line", { x1: margin.left, x2: width - margin.right, y1: ty, y2: ty, class: "grid" }, root);
    svg("text", { x: margin.left - 8, y: ty + 4, class: "tick", "text-anchor": "end" }, root).textContent = format(tick);
  }
  const xTicks = xLabels ? xLabels.map((label, i) => [i, label])
    : Array.from({ length: 5 }, (_, i) => x0 + ((x1 - x0) * i) / 4).map((x) => [x, timeLabel(x, x1 - x0)]);
  const every = Math.max(1, Math.ceil(xTicks.length / Math.max(2, Math.floor(innerW / 90))));
  let previous = null;
  xTicks.forEach(([x, label], i) => {
    if (i % every || label === previous) return;
    previous = label;
    const anchor = xMap(x) < margin.left + 40 ? "start" : xMap(x) > width - margin.right - 40 ? "end" : "middle";
    svg("text", { x: xMap(x), y: height - 10, class: "tick", "text-anchor": anchor }, root).textContent = label;
  });
  for (const s of series) {
    const points = s.points.filter((p) => p.y !== null && p.y !== undefined);
    if (!points.length) continue;
    const d = points.map((p, i) => `${i ? "L" : "M"}${xMap(p.x).toFixed(1)},${y.map(p.y).toFixed(1)}`).join("");
    svg("path", { d, class: "line", stroke: s.colour }, root);
    for (const p of points) {
      const dot = svg("circle", { cx: xMap(p.x), cy: y.map(p.y), r: 3.5, fill: s.colour, class: "dot" }, root);
      svg("title", {}, dot).textContent = p.title || `${s.name}: ${format(p.y)}`;
    }
  }
  legend(container, series);
}

/** Draw bars: [{label, value, colour, title, highlight}]. */
export function barChart(container, { bars, height = 220, format = defaultFormat, emptyText = "No data yet." }) {
  const shown = bars.filter((b) => b.value !== null && b.value !== undefined);
  if (!shown.length) return empty(container, emptyText);
  const { root, width } = frame(container, height);
  const margin = { left: 52, right: 12, top: 18, bottom: 34 };
  const innerW = width - margin.left - margin.right, innerH = height - margin.top - margin.bottom;
  const y = yScale(shown.map((b) => b.value), { min: 0 }, innerH, margin.top);
  for (const tick of y.ticks) {
    const ty = y.map(tick);
    svg("line", { x1: margin.left, x2: width - margin.right, y1: ty, y2: ty, class: "grid" }, root);
    svg("text", { x: margin.left - 8, y: ty + 4, class: "tick", "text-anchor": "end" }, root).textContent = format(tick);
  }
  const slot = innerW / bars.length, barW = Math.min(56, slot * 0.68);
  bars.forEach((b, i) => {
    const cx = margin.left + slot * (i + 0.5);
    const label = b.label.length > 16 ? `${b.label.slice(0, 7)}…${b.label.slice(-8)}` : b.label;
    svg("text", { x: cx, y: height - 14, class: "tick", "text-anchor": "middle" }, root).textContent = label;
    if (b.value === null || b.value === undefined) return;
    const top = y.map(b.value), base = y.map(0);
    const rect = svg("rect", { x: cx - barW / 2, y: Math.min(top, base), width: barW, height: Math.abs(base - top) || 1,
                               rx: 3, fill: b.colour, class: b.highlight ? "bar highlight" : "bar" }, root);
    svg("title", {}, rect).textContent = b.title || `${b.label}: ${format(b.value)}`;
    svg("text", { x: cx, y: top - 5, class: "value", "text-anchor": "middle" }, root).textContent = format(b.value);
  });
}

function legend(container, series) {
  if (series.length < 2) return;
  const holder = document.createElement("div");
  holder.className = "legend";
  for (const s of series) {
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${s.colour}"></i>`;
    item.append(s.name);
    holder.append(item);
  }
  container.append(holder);
}

/** A time axis label with the precision the axis' span needs. */
function timeLabel(x, span) {
  const date = new Date(x);
  if (span < 10 * 60e3) return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (span < 2 * 86400e3) return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  return date.toLocaleDateString(undefined, { month: "short", day: "numeric" });
}

export function shortTime(date) {
  return date.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}
