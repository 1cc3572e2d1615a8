// Two small SVG charts drawn from /api/stats: throughput over time (stacked bars of
// succeeded/failed per bucket) and durations per function (p50/p95/p99 bars).
// Function names and numbers go in as text nodes / attributes, never as markup.

import { fill, h, s } from "./dom.js";
import { compact, count, duration, parseTime } from "./format.js";

const DURATION_ROWS = 8; // the slowest functions shown
const ROW_HEIGHT = 22;
// Both charts are drawn this tall (room for every duration row), so the cards keep their
// height as data arrives and the task list below them never moves under the pointer.
const HEIGHT = DURATION_ROWS * ROW_HEIGHT + 30;

function width(container) {
  return Math.max(280, Math.floor(container.clientWidth || 480));
}

function niceMax(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * magnitude) return step * magnitude;
  }
  return 10 * magnitude;
}

const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const day = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });

/** Throughput: one stacked bar per bucket; hover shows the bucket's numbers. */
export function drawThroughput(container, buckets, bucketSeconds) {
  const points = (buckets || [])
    .map((b) => ({
      t: parseTime(b.bucket_start),
      ok: Number(b.succeeded) || 0,
      bad: Number(b.failed) || 0,
    }))
    .filter((b) => b.t !== null)
    .sort((a, b) => a.t - b.t);
  if (!points.some((p) => p.ok || p.bad)) {
    fill(container, h("p", { class: "chart-empty" }, "No finished tasks yet."));
    return;
  }
  const W = width(container);
  const pad = { left: 40, right: 8, top: 10, bottom: 24 };
  const plotW = W - pad.left - pad.right;
  const plotH = HEIGHT - pad.top - pad.bottom;
  const top = niceMax(Math.max(...points.map((p) => p.ok + p.bad)));
  const slot = plotW / points.length;
  const barW = Math.max(1, Math.min(28, slot * 0.72));
  const y = (v) => pad.top + plotH - (v / top) * plotH;
  const step = bucketSeconds ? bucketSeconds * 1000 : points.length > 1 ? points[1].t - points[0].t : 60_000;
  const spansDays = points[points.length - 1].t - points[0].t > 36 * 3600_000;

  const svg = s("svg", {
    viewBox: `0 0 ${W} ${HEIGHT}`, width: W, height: HEIGHT, class: "chart-svg",
  });
  for (const frac of [0, 0.5, 1]) {
    const v = top * frac;
    svg.append(
      s("line", { x1: pad.left, x2: W - pad.right, y1: y(v), y2: y(v), class: "grid" }),
      s("text", { x: pad.left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, compact(v)),
    );
  }
  const labelEvery = Math.max(1, Math.ceil(points.length / Math.max(2, Math.floor(plotW / 70))));
  points.forEach((p, i) => {
    const x = pad.left + i * slot + (slot - barW) / 2;
    const g = s("g", { class: "bar" });
    const label = `${spansDays ? day.format(p.t) + " " : ""}${clock.format(p.t)}`;
    g.append(
      s("title", {}, `${label} (+${duration(step / 1000)}): ${count(p.ok)} succeeded, ${count(p.bad)} failed`),
      s("rect", { x: x - (slot - barW) / 2, y: pad.top, width: slot, height: plotH, class: "hit" }),
    );
    if (p.ok) {
      g.append(s("rect", {
        x, y: y(p.ok), width: barW, height: Math.max(1, y(0) - y(p.ok)), class: "ok", rx: 2,
      }));
    }
    if (p.bad) {
      g.append(s("rect", {
        x, y: y(p.ok + p.bad), width: barW, height: Math.max(1, y(p.ok) - y(p.ok + p.bad)),
        class: "bad", rx: 2,
      }));
    }
    svg.append(g);
    if (i % labelEvery === 0) {
      svg.append(s("text", {
        x: x + barW / 2, y: HEIGHT - 6, class: "axis", "text-anchor": "middle",
      }, label));
    }
  });
  fill(container, svg);
}

/** Durations: per function, p99 / p95 / p50 as nested bars on one scale. */
export function drawDurations(container, durations) {
  const rows = Object.entries(durations || {})
    .map(([func, d]) => ({ func, ...d }))
    .filter((d) => d.count && d.p99 !== null && d.p99 !== undefined)
    .sort((a, b) => b.p99 - a.p99)
    .slice(0, DURATION_ROWS);
  if (!rows.length) {
    fill(container, h("p", { class: "chart-empty" }, "No durations yet."));
    return;
  }
  const W = width(container);
  const rowH = ROW_HEIGHT;
  const labelW = Math.min(180, Math.floor(W * 0.34));
  const valueW = 64;
  const plotW = W - labelW - valueW - 12;
  const top = niceMax(Math.max(...rows.map((r) => r.p99)));
  const H = HEIGHT;
  const x = (v) => labelW + (Math.max(0, v) / top) * plotW;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "chart-svg" });
  for (const frac of [0, 0.5, 1]) {
    svg.append(
      s("line", { x1: x(top * frac), x2: x(top * frac), y1: 4, y2: H - 22, class: "grid" }),
      s("text", { x: x(top * frac), y: H - 6, class: "axis", "text-anchor": "middle" },
        duration(top * frac)),
    );
  }
  const offset = Math.max(6, (H - 26 - rows.length * rowH) / 2);
  rows.forEach((r, i) => {
    const cy = offset + i * rowH;
    const g = s("g", { class: "dur-row" });
    g.append(
      s("title", {}, `${r.func}: ${count(r.count)} runs; p50 ${duration(r.p50)}, ` +
        `p95 ${duration(r.p95)}, p99 ${duration(r.p99)}`),
      s("text", { x: labelW - 8, y: cy + 15, class: "label", "text-anchor": "end" },
        shortName(r.func, Math.floor((labelW - 10) / 7.4))),
      s("rect", { x: labelW, y: cy + 4, width: plotW, height: 14, class: "track", rx: 3 }),
      s("rect", { x: labelW, y: cy + 4, width: Math.max(2, x(r.p99) - labelW), height: 14, class: "p99", rx: 3 }),
      s("rect", { x: labelW, y: cy + 4, width: Math.max(2, x(r.p95) - labelW), height: 14, class: "p95", rx: 3 }),
      s("rect", { x: labelW, y: cy + 4, width: Math.max(2, x(r.p50) - labelW), height: 14, class: "p50", rx: 3 }),
      s("text", { x: W - 4, y: cy + 15, class: "value", "text-anchor": "end" }, duration(r.p95)),
    );
    svg.append(g);
  });
  fill(container, svg);
}

/** The function's own name (after the last dot), cut to fit a chart label. */
function shortName(func, maxChars) {
  const name = func.slice(func.lastIndexOf(".") + 1) || func;
  return name.length > maxChars ? `${name.slice(0, Math.max(1, maxChars - 1))}…` : name;
}
