// The idem dashboard: polls /metrics (Prometheus text), draws rates as
// line charts and asks /v1/inspect/{key} for the key inspector. Requests
// go to the page's own origin, so the browser sends the credentials it
// used to open the page.
"use strict";

const POLL_MS = 1000;
// Points kept per chart: two minutes at one poll a second.
const POINTS_MAX = 120;
const REPLAY_PAIRS = [["IDEM.BEGIN", "done"], ["COUNTER.ADD", "replayed"]];
const CONFLICT_OUTCOMES = ["mismatch", "stale", "held", "busy", "conflict"];

// Parses the text format into [{name, labels, value}].
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$/);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      for (const l of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    }
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

function sum(samples, name, pred) {
  let s = 0;
  for (const x of samples) if (x.name === name && (!pred || pred(x.labels))) s += x.value;
  return s;
}

// The cumulative figures the charts derive rates from.
function totals(samples) {
  const outcome = (pairs) => sum(samples, "idem_command_outcomes_total",
    (l) => pairs.some(([c, o]) => (c === null || l.command === c) && l.outcome === o));
  return {
    duplicates: sum(samples, "idem_duplicates_absorbed_total"),
    replays: outcome(REPLAY_PAIRS),
    conflicts: outcome(CONFLICT_OUTCOMES.map((o) => [null, o])),
    commands: sum(samples, "idem_command_duration_seconds_count"),
    latencySum: sum(samples, "idem_command_duration_seconds_sum"),
    walSyncs: sum(samples, "idem_wal_sync_duration_seconds_count"),
    walSyncSum: sum(samples, "idem_wal_sync_duration_seconds_sum"),
    records: sum(samples, "idem_records"),
    waiters: sum(samples, "idem_parked_waiters"),
  };
}

class Chart {
  constructor(id, color) {
    this.canvas = document.getElementById(id);
    this.color = color;
    this.points = [];
  }
  push(v) {
    this.points.push(v);
    if (this.points.length > POINTS_MAX) this.points.shift();
    this.canvas.dataset.points = String(this.points.length);
    this.canvas.dataset.last = String(v);
    this.canvas.dataset.max = String(Math.max(...this.points));
    this.draw();
  }
  draw() {
    const c = this.canvas, g = c.getContext("2d"), w = c.width, h = c.height;
    g.clearRect(0, 0, w, h);
    const max = Math.max(1e-9, ...this.points);
    g.strokeStyle = "#e3e6ea";
    g.beginPath(); g.moveTo(0, h - 0.5); g.lineTo(w, h - 0.5); g.stroke();
    g.fillStyle = "#5b6573"; g.font = "11px sans-serif";
    g.fillText(formatNumber(max), 4, 12);
    g.strokeStyle = this.color; g.lineWidth = 2;
    g.beginPath();
    this.points.forEach((v, i) => {
      const x = (i / (POINTS_MAX - 1)) * w, y = h - 4 - (v / max) * (h - 20);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  }
}

function formatNumber(v) {
  if (v < 1e-6) return "0";
  if (v >= 100) return v.toFixed(0);
  if (v >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

const charts = {
  duplicates: new Chart("chart-duplicates", "#1f7a4d"),
  replays: new Chart("chart-replays", "#2f5fb3"),
  conflicts: new Chart("chart-conflicts", "#b3472f"),
  latency: new Chart("chart-latency", "#7a4db3"),
  walSyncs: new Chart("chart-wal-syncs", "#b38a2f"),
  walLatency: new Chart("chart-wal-latency", "#2f9bb3"),
};

let previous = null;

async function poll() {
  const status = document.getElementById("status");
  try {
    const resp = await fetch("/metrics", { cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const samples = parseMetrics(await resp.text());
    const now = totals(samples);
    const t = performance.now();
    if (previous) {
      const dt = Math.max(1e-3, (t - previous.t) / 1000), d = (k) => Math.max(0, now[k] - previous.now[k]);
      charts.duplicates.push(d("duplicates") / dt);
      charts.replays.push(d("replays") / dt);
      charts.conflicts.push(d("conflicts") / dt);
      charts.latency.push(d("commands") ? (d("latencySum") / d("commands")) * 1000 : 0);
      charts.walSyncs.push(d("walSyncs") / dt);
      charts.walLatency.push(d("walSyncs") ? (d("walSyncSum") / d("walSyncs")) * 1000 : 0);
    }
    previous = { now, t };
    for (const [k, id] of [["duplicates", "total-duplicates"], ["replays", "total-replays"],
      ["conflicts", "total-conflicts"], ["commands", "total-commands"], ["records", "total-records"],
      ["waiters", "total-waiters"]]) {
      document.getElementById(id).textContent = String(now[k]);
    }
    const rows = samples.filter((s) => s.name === "idem_duplicates_absorbed_total")
      .map((s) => `<tr><th>${escapeHtml(s.labels.primitive)}</th><td>${s.value}</td></tr>`);
    document.querySelector("#dup-table tbody").innerHTML = rows.join("");
    status.textContent = "live, polled " + new Date().toLocaleTimeString();
  } catch (e) {
    status.textContent = "cannot read /metrics: " + e.message;
  }
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function flatten(prefix, v, out) {
  if (v !== null && typeof v === "object") {
    for (const [k, x] of Object.entries(v)) flatten(prefix ? prefix + "." + k : k, x, out);
  } else {
    out.push([prefix, v]);
  }
  return out;
}

async function inspect(key) {
  const out = document.getElementById("inspect-output");
  const body = document.querySelector("#inspect-table tbody");
  out.textContent = "";
  try {
    const resp = await fetch("/v1/inspect/" + encodeURIComponent(key), { cache: "no-store" });
    const json = await resp.json();
    if (!resp.ok) throw new Error(json.detail || ("HTTP " + resp.status));
    body.innerHTML = flatten("", json, [])
      .map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td data-field="${escapeHtml(k)}">${escapeHtml(v)}</td></tr>`)
      .join("");
  } catch (e) {
    body.innerHTML = "";
    out.textContent = e.message;
  }
}

document.getElementById("inspect-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const key = document.getElementById("inspect-key").value;
  if (key) inspect(key);
});

poll();
setInterval(poll, POLL_MS);
