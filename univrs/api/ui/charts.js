// Small hand-written SVG charts: a live line chart with two axes and a leader timeline.
// Everything is built with DOM calls, never parsed from strings: names from the cluster are
// data, not markup.

const NS = "http://www.w3.org/2000/svg";
export const WINDOW_MS = 5 * 60 * 1000; // what the charts keep: the last five minutes
const STARTED = Date.now();

/** The span shown: since the page opened (at least a minute), at most WINDOW_MS. */
function span(now) {
  return Math.min(WINDOW_MS, Math.max(60 * 1000, now - STARTED));
}

function spanLabel(ms) {
  return ms >= 120 * 1000 ? `−${Math.round(ms / 60000)} min` : `−${Math.round(ms / 1000)} s`;
}

function el(name, attrs = {}, parent = null) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (parent) parent.appendChild(e);
  return e;
}

export const PALETTE = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16"];

export function colorOf(id, ids) {
  const i = ids.indexOf(id);
  return PALETTE[(i < 0 ? 0 : i) % PALETTE.length];
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}k`;
  if (v >= 10) return v.toFixed(0);
  return v.toFixed(v >= 1 ? 1 : 2);
}

/**
 * A line chart: series on a left axis (rates) and a right axis (latency), with markers for
 * leader changes. `push(t, {key: value})` adds a point; `render()` redraws.
 */
export class LineChart {
  constructor(container, { series, height = 170 }) {
    this.container = container;
    this.series = series; // [{key, label, color, axis: "left"|"right", unit}]
    this.points = []; // [{t, values}]
    this.markers = []; // [{t, label}]
    this.height = height;
    this.svg = el("svg", { class: "linechart", role: "img" }, container);
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const s of series) {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = s.color;
      item.append(swatch, document.createTextNode(`${s.label}`));
      const value = document.createElement("b");
      value.dataset.series = s.key;
      item.append(" ", value);
      legend.append(item);
    }
    container.append(legend);
    this.legend = legend;
  }

  push(t, values) {
    this.points.push({ t, values });
    const cut = t - WINDOW_MS;
    while (this.points.length && this.points[0].t < cut) this.points.shift();
    while (this.markers.length && this.markers[0].t < cut) this.markers.shift();
    for (const s of this.series) {
      const b = this.legend.querySelector(`b[data-series="${s.key}"]`);
      const v = values[s.key];
      b.textContent = v === null || v === undefined ? "–" : `${fmt(v)} ${s.unit}`;
    }
  }

  mark(t, label) {
    this.markers.push({ t, label });
  }

  render(now = Date.now()) {
    const svg = this.svg;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const width = Math.max(200, this.container.clientWidth || 400);
    const height = this.height;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    const pad = { l: 44, r: 44, t: 8, b: 18 };
    const w = width - pad.l - pad.r;
    const h = height - pad.t - pad.b;
    const win = span(now);
    const t0 = now - win;
    const x = (t) => pad.l + ((t - t0) / win) * w;
    const maxOf = (axis) =>
      niceMax(
        Math.max(
          0,
          ...this.points.flatMap((p) =>
            this.series.filter((s) => s.axis === axis).map((s) => p.values[s.key] || 0),
          ),
        ),
      );
    const max = { left: maxOf("left"), right: maxOf("right") };
    const y = (axis, v) => pad.t + h - (Math.min(v, max[axis]) / max[axis]) * h;

    el("rect", { x: pad.l, y: pad.t, width: w, height: h, class: "plot" }, svg);
    for (const f of [0.25, 0.5, 0.75]) {
      el("line", { x1: pad.l, x2: pad.l + w, y1: pad.t + h * f, y2: pad.t + h * f, class: "grid" }, svg);
    }
    const units = {};
    for (const s of this.series) units[s.axis] = s.unit;
    const label = (text, attrs) => {
      const t = el("text", attrs, svg);
      t.textContent = text;
    };
    if (units.left) label(`${fmt(max.left)} ${units.left}`, { x: pad.l - 4, y: pad.t + 10, class: "axis", "text-anchor": "end" });
    if (units.right) label(`${fmt(max.right)} ${units.right}`, { x: pad.l + w + 4, y: pad.t + 10, class: "axis" });
    label(spanLabel(win), { x: pad.l, y: height - 4, class: "axis" });
    label("now", { x: pad.l + w, y: height - 4, class: "axis", "text-anchor": "end" });

    let labelledAt = Infinity;
    for (const m of [...this.markers].reverse()) { // newest first: its label wins
      if (m.t < t0) continue;
      el("line", { x1: x(m.t), x2: x(m.t), y1: pad.t, y2: pad.t + h, class: "marker" }, svg);
      if (labelledAt - x(m.t) > 60) {
        label(m.label, { x: x(m.t) + 3, y: pad.t + 12, class: "marker-label" });
        labelledAt = x(m.t);
      }
    }
    for (const s of this.series) {
      const pts = this.points
        .filter((p) => p.t >= t0 && p.values[s.key] !== null && p.values[s.key] !== undefined)
        .map((p) => `${x(p.t).toFixed(1)},${y(s.axis, p.values[s.key]).toFixed(1)}`);
      if (pts.length) {

        el("polyline", { points: pts.join(" "), fill: "none", stroke: s.color, "stroke-width": 2,
          class: `series series-${s.key}`, "data-points": pts.length }, svg);
      }
    }
  }
}

/**
 * Who led when: one band per leadership (colour per member), grey while no leader was
 * known, a tick at every term change (an election).
 */
export class LeaderTimeline {
  constructor(container) {
    this.container = container;
    this.svg = el("svg", { class: "timeline", role: "img" }, container);
  }

  render(segments, terms, memberIds, now = Date.now()) {
    const svg = this.svg;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const width = Math.max(200, this.container.clientWidth || 400);
    const height = 46;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    const pad = { l: 44, r: 44 };
    const w = width - pad.l - pad.r;
    const win = span(now);
    const t0 = now - win;
    const x = (t) => pad.l + ((Math.max(t0, Math.min(now, t)) - t0) / win) * w;
    el("rect", { x: pad.l, y: 6, width: w, height: 22, class: "plot" }, svg);
    for (const seg of segments) {
      const end = seg.end ?? now;
      if (end < t0) continue;
      const r = el("rect", { x: x(seg.start), y: 6, width: Math.max(1, x(end) - x(seg.start)), height: 22,
        fill: seg.leader ? colorOf(seg.leader, memberIds) : "#cbd5e0", class: "segment",
        "data-leader": seg.leader || "" }, svg);
      const title = el("title", {}, r);
      title.textContent = seg.leader ? `${seg.leader} leads (term ${seg.term})` : "no leader";
      if (seg.leader && x(end) - x(seg.start) > 30) {
        const t = el("text", { x: x(seg.start) + 4, y: 21, class: "segment-label" }, svg);
        t.textContent = seg.leader;
      }
    }
    for (const tc of terms) {
      if (tc.t < t0) continue;
      el("line", { x1: x(tc.t), x2: x(tc.t), y1: 2, y2: 32, class: "term-tick" }, svg);
      const t = el("text", { x: x(tc.t), y: 43, class: "axis", "text-anchor": "middle" }, svg);
      t.textContent = `t${tc.term}`;
    }
  }
}
