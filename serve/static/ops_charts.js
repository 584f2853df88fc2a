// The operations page's charts of the last 15 minutes (/v1/ops/history), drawn as inline SVG: no
// library, nothing fetched from elsewhere, so the page works offline.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 640;
const HEIGHT = 160;
const PAD = { left: 40, right: 8, top: 8, bottom: 34 };
const BAND = 8; // the tier strip under the load chart
const LANE_CLASSES = { realtime: "series-realtime", batch: "series-batch" };

function el(name, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function titled(node, text) {
  node.append(el("title", {}, text));
  return node;
}

function clock(at) {
  return new Date(at * 1000).toLocaleTimeString();
}

// Scales for one chart: time on x over the window, value on y from 0 to a rounded maximum.
function frame(history, maxValue) {
  const top = niceMax(maxValue);
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const start = history.now - history.window_s;
  return {
    top,
    x: (at) => PAD.left + ((at - start) / history.window_s) * plotW,
    y: (value) => PAD.top + plotH - (Math.min(value, top) / top) * plotH,
    bottom: PAD.top + plotH,
  };
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 2.5, 5, 10].find((s) => s * magnitude >= value);
  return step * magnitude;
}

function axes(svg, history, scale, unit) {
  const axis = el("g", { class: "axis" });
  axis.append(el("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: scale.bottom, y2: scale.bottom }));
  for (const fraction of [0, 0.5, 1]) {
    const value = scale.top * fraction;
    const y = scale.y(value);
    axis.append(el("line", { class: "gridline", x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y }));
    axis.append(el("text", { x: PAD.left - 4, y: y + 4, "text-anchor": "end" }, `${+value.toFixed(2)}${unit}`));
  }
  for (const minutesAgo of [15, 10, 5, 0]) {
    const x = scale.x(history.now - minutesAgo * 60);
    axis.append(el("text", { x, y: HEIGHT - 4, "text-anchor": "middle" }, minutesAgo ? `−${minutesAgo} min` : "now"));
  }
  svg.append(axis);
}

// A line through the samples where value(sample) is a number; a missing value breaks the line.
function series(svg, samples, scale, value, className, label) {
  let points = [];
  const group = titled(el("g", { class: `series ${className}`, "data-series": label }), label);
  const flush = () => {
    if (points.length) group.append(el("polyline", { points: points.join(" ") }));
    points = [];
  };
  for (const sample of samples) {
    const v = value(sample);
    if (v === null || v === undefined) flush();
    else points.push(`${scale.x(sample.at).toFixed(1)},${scale.y(v).toFixed(1)}`);
  }
  flush();
  svg.append(group);
}

function decisions(svg, history, scale) {
  for (const decision of history.decisions) {
    const x = scale.x(decision.at);
    const mark = el("line", { class: "decision", x1: x, x2: x, y1: PAD.top, y2: scale.bottom,
      "data-tier": decision.tier });
    svg.append(titled(mark, `${clock(decision.at)} → ${decision.tier}: ${decision.reason || "no reason given"}`));
  }
}

function chart(id, label) {
  const svg = el("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": label, class: "chart" });
  svg.id = id;
  return svg;
}

function loadChart(history) {
  const ladder = history.ladder || [];
  const thresholds = ladder.flatMap((rung) => [rung.enter_load, rung.exit_load]).filter((v) => v !== null);
  const peak = Math.max(...history.samples.map((s) => s.load), ...thresholds, 0);
  const svg = chart("chart-load", "Load against the tier thresholds, with the tier below, last 15 minutes");
  const scale = frame(history, peak * 1.1);
  axes(svg, history, scale, "");
  for (const rung of ladder) {
    for (const [kind, value] of [["enter", rung.enter_load], ["exit", rung.exit_load]]) {
      if (value === null) continue;
      const y = scale.y(value);
      const line = el("line", { class: `threshold threshold-${kind}`, x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y,
        "data-tier": rung.name });
      svg.append(titled(line, `${kind} ${rung.name} at load ${value}`));
      if (kind === "enter") {
        svg.append(el("text", { class: "threshold-label", x: WIDTH - PAD.right - 2, y: y - 3, "text-anchor": "end" },
          `${rung.name} ${value}`));
      }
    }
  }
  series(svg, history.samples, scale, (s) => s.load, "series-load", "load");
  // The tier strip: one segment per run of samples at the same tier, shaded by level.
  const samples = history.samples;
  samples.forEach((sample, index) => {
    const next = samples[index + 1];
    const x1 = scale.x(sample.at);
    const x2 = next ? scale.x(next.at) : scale.x(history.now);
    const band = el("rect", { class: `tier-band tier-level-${Math.min(sample.level, 3)}`, x: x1,
      y: scale.bottom + 2, width: Math.max(x2 - x1, 1), height: BAND, "data-tier": sample.tier });
    svg.append(titled(band, `tier ${sample.tier} (level ${sample.level}) from ${clock(sample.at)}`));
  });
  decisions(svg, history, scale);
  return svg;
}

function laneChart(history, id, label, value, unit) {
  const values = history.samples.flatMap((s) => Object.keys(LANE_CLASSES).map((lane) => value(s, lane)));
  const scale = frame(history, Math.max(...values.filter((v) => v !== null && v !== undefined), 0));
  const svg = chart(id, label);
  axes(svg, history, scale, unit);
  for (const [lane, className] of Object.entries(LANE_CLASSES)) {
    series(svg, history.samples, scale, (s) => value(s, lane), className, lane);
  }
  decisions(svg, history, scale);
  return svg;
}

// Replace the charts in `container` with those of `history`.
export function renderHistory(container, history) {
  container.replaceChildren(
    figure("Load and tier", loadChart(history)),
    figure("Queue depth per lane", laneChart(history, "chart-queues", "Queue depth per lane, last 15 minutes",
      (s, lane) => s.queued[lane], "")),
    figure("p95 latency per lane", laneChart(history, "chart-p95", "p95 latency per lane over the last minute, last 15 minutes",
      (s, lane) => s.p95_s[lane], " s")),
  );
  container.dataset.samples = String(history.samples.length);
  container.dataset.decisions = String(history.decisions.length);
}

function figure(caption, svg) {
  const node = document.createElement("figure");
  const text = document.createElement("figcaption");
  text.textContent = caption;
  node.append(text, svg);
  return node;
}
