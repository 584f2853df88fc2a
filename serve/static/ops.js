// The operations page: /v1/ops (the same JSON SREs' scripts read) and the last 15 minutes
// (/v1/ops/history), refreshed every 2 s.

import { getJson, setUpKeyPanel } from "/static/api.js";
import { renderHistory } from "/static/ops_charts.js";

const REFRESH_MS = 2000;

const $ = (id) => document.getElementById(id);

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function row(...cells) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  return tr;
}

function emptyRow(columns, text) {
  const td = cell(text, "hint");
  td.colSpan = columns;
  return row(td);
}

// A bar with its number beside it, so it reads without the graphic.
function meter(value, max, label, text, high = null) {
  const td = document.createElement("td");
  const bar = document.createElement("meter");
  bar.min = 0;
  bar.max = max || 1;
  bar.value = value;
  if (high !== null) bar.high = high;
  bar.setAttribute("aria-label", label);
  td.append(bar, ` ${text}`);
  return td;
}

// Fills a table body and names each cell after its column, so a phone can show rows as cards.
function fillTable(id, rows) {
  const body = $(id);
  body.replaceChildren(...rows);
  const names = [...body.closest("table").querySelectorAll("thead th")].map((th) => th.textContent);
  for (const tr of body.rows) {
    [...tr.cells].forEach((td, index) => {
      if (td.colSpan === 1) td.dataset.label = names[index];
    });
  }
}

function pairs(object) {
  const entries = Object.entries(object || {});
  return entries.length ? entries.map(([key, value]) => `${key}: ${value}`).join(", ") : "–";
}

function renderTier(snapshot) {
  const tier = snapshot.tier;
  $("tier-name").textContent = tier.name;
  $("tier-name").dataset.level = String(tier.level);
  const limits = [
    tier.max_size && `size ≤ ${tier.max_size}`,
    tier.max_frames && `frames ≤ ${tier.max_frames}`,
    tier.max_steps && `steps ≤ ${tier.max_steps}`,
    tier.step_cache && `step cache ${tier.step_cache.method} @ ${tier.step_cache.threshold}`,
    tier.route && `routed to ${tier.route.model_version}`,
    tier.lanes && tier.lanes.length < 2 && `${tier.lanes.join(", ")} lane only`,
  ].filter(Boolean);
  $("tier-limits").textContent = `level ${tier.level} · ${limits.length ? limits.join(", ") : "no limits"}`;
  $("tier-reason").textContent = snapshot.reason || "no reason given (initial policy)";
}

function renderVersions(snapshot) {
  const rows = Object.entries(snapshot.versions).map(([name, version]) => {
    const failing = pairs(version.consecutive_failures);
    const instance = cell(version.active_instance, version.active_instance === "backup" ? "warn" : "");
    const weight = meter(version.weight, 100, `${name} traffic weight`, `${version.weight}%`);
    return row(cell(name), weight, instance, cell(failing));
  });
  fillTable("versions", rows.length ? rows : [emptyRow(4, "no model versions")]);
}

function renderLanes(snapshot) {
  const rows = Object.entries(snapshot.lanes).map(([lane, state]) => row(
    cell(lane), cell(String(state.queued)), cell(String(state.limit)),
    meter(state.queued, state.limit, `${lane} queue fill`, `${Math.round((100 * state.queued) / (state.limit || 1))}%`,
      state.limit * 0.75),
  ));
  fillTable("lanes", rows);
  $("running").textContent = `${snapshot.running} / ${snapshot.capacity}`;
}

function renderCache(snapshot) {
  const cache = snapshot.cache;
  $("cache-rate").textContent = cache.hit_rate === null ? "–" : `${(cache.hit_rate * 100).toFixed(1)}%`;
  $("cache-counts").textContent = `hit rate · ${cache.hit} hits, ${cache.miss} misses`;
}

function renderFaults(snapshot) {
  const faults = snapshot.faults || [];
  $("faults-card").hidden = faults.length === 0;
  $("faults").replaceChildren(...faults.map((fault) => {
    const item = document.createElement("li");
    item.textContent = `${fault.model_version} ${fault.instance}: fails ${(fault.error_rate * 100).toFixed(0)}%`;
    return item;
  }));
}

function renderDecisions(snapshot) {
  const rows = snapshot.recent_decisions.map((decision) => row(
    cell(new Date(decision.at * 1000).toLocaleTimeString()), cell(decision.tier), cell(pairs(decision.weights)),
    cell(pairs(decision.active_instance)), cell(decision.reason || "–"),
  ));
  fillTable("decisions", rows.length ? rows : [emptyRow(5, "no policy changes since this replica started")]);
}

async function refresh() {
  try {
    const [snapshot, history] = await Promise.all([getJson("/v1/ops"), getJson("/v1/ops/history")]);
    renderHistory($("charts"), history);
    renderTier(snapshot);
    renderVersions(snapshot);
    renderLanes(snapshot);
    renderCache(snapshot);
    renderFaults(snapshot);
    renderDecisions(snapshot);
    $("message").hidden = true;
    $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    // Keep the last figures on screen, say they are stale, and keep trying.
    const box = $("message");
    box.hidden = false;
    box.className = "message warning";
    box.textContent = `Could not refresh (${error.code || "error"}): ${error.message}. Showing the last figures.`;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

setUpKeyPanel();
refresh();
