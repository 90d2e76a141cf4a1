/* DynamicRL dashboard: the page's behaviour (plain ES2020, no modules, no build step).
 *
 * Where the data comes from:
 * - GET /api/status every 2 s drives the header, the buttons and the services table. When it
 *   answers again after failing (or names another run), every REST snapshot is read again.
 * - The REST snapshots (metrics, params, history, checkpoints, videos) fill the page; the bus
 *   events from /api/events keep it current in between; a `gap` event re-reads the snapshots.
 * - The charts are redrawn from `page` at most twice a second (Plotly.react).
 */
"use strict";

const STATUS_POLL_MS = 2000;
const REDRAW_MS = 500;
const GET_TIMEOUT_MS = 15000;
const STREAM_RETRY_MS = 5000;
const AXIS_COLUMNS = new Set(["iteration", "time", "env_steps"]);
const FIRST_METRICS = ["return_mean", "length_mean", "sps"];
const PAUSED_STATES = new Set(["pausing", "paused"]);
const TIME_LABEL = Symbol("time label"); // a row's x on the time axis, computed once
const PLOT_CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
const MARKER_COLOR = "#cf222e";
const OTHER_MARKER_COLOR = "#8c959f";

/** Everything the page knows; the render functions draw from here. */
const page = {
  status: null, // the last StatusReply (plus "reachable")
  statusOk: false, // the last GET /api/status succeeded
  runId: null,
  inFlight: new Set(), // ids of the buttons whose request is pending
  rows: [], // metrics rows sorted by iteration: {column: value}
  iterations: new Set(), // the iterations in rows (the REST snapshot and the stream overlap)
  numericColumns: new Set(),
  hyperNames: new Set(), // columns that are tunables, not metrics
  params: [], // Tunable rows from /api/params
  journal: new Map(), // "patch_id|service" -> JournalEntry
  pauses: [], // {start, end} in seconds (end null: still paused), from control.state
  previewNotes: new Map(), // pause number -> {ltime, error}, from metrics.previews
  selectedMetrics: new Set(["return_mean"]),
  selectedParam: null,
  xaxis: "time",
  lastBusTs: null, // the server's clock, as the latest bus event told it
};

const $ = (id) => document.getElementById(id);

// -- small helpers -------------------------------------------------------------------------

function setText(id, text) {
  $(id).textContent = text;
}

/** A DOM element: attrs (text, class, or any attribute; null/false skipped) and children. */
function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...[].concat(children));
  return node;
}

function cell(text, cls = null) {
  return el("td", { class: cls, text: text === null || text === undefined ? "–" : String(text) });
}

function isNumber(v) {
  return typeof v === "number" && Number.isFinite(v);
}

function fmtInt(n) {
  return isNumber(n) ? Math.round(n).toLocaleString("en-US") : "–";
}

function fmtNum(n, digits = 4) {
  if (!isNumber(n)) return "–";
  return Math.abs(n) >= 1000 ? fmtInt(n) : String(Number(n.toPrecision(digits)));
}

/** Like Python's %g, near enough for bounds. */
function fmtG(n) {
  return String(Number(Number(n).toPrecision(6)));
}

/** A hyperparameter value as typed: 0.0025, true, null, or a bare string. */
function fmtValue(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

function fmtBytes(n) {
  if (!isNumber(n)) return "–";
  return n >= 1048576 ? `${(n / 1048576).toFixed(1)} MiB` : `${(n / 1024).toFixed(0)} KiB`;
}

function clockOf(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString();
}

/** Seconds since the epoch -> a Plotly date string in local time (Plotly dates carry no zone,
 *  and a number on a date axis would be shown as UTC). */
function timeLabel(seconds) {
  const d = new Date(seconds * 1000);
  const p = (n, width = 2) => String(n).padStart(width, "0");
  return (
    `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`
  );
}

const renderedKeys = new WeakMap();

/** True (and remembered) when `key` differs from what `node` was last rendered from: lists are
 *  rebuilt only when their content changes, so a selection, a typed value or a video survives. */
function keyChanged(node, key) {
  if (renderedKeys.get(node) === key) return false;
  renderedKeys.set(node, key);
  return true;
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// -- the REST API ----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.status = status; // 0: no HTTP answer at all
    this.body = body || {};
  }
}

/** GET `path`, or POST `body` as JSON; the reply's JSON, or an ApiError carrying the error body. */
async function api(path, body) {
  const init = { credentials: "same-origin", headers: { Accept: "application/json" } };
  let timer = null;
  if (body === undefined) {
    // GETs only: a pause or a waiting patch may rightly take long
    const abort = new AbortController();
    timer = setTimeout(() => abort.abort(), GET_TIMEOUT_MS);
    init.signal = abort.signal;
  } else {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, null, `${path}: the dashboard did not answer (${err.message})`);
  } finally {
    clearTimeout(timer);
  }
  const reply = await response.json().catch(() => null);
  if (!response.ok) {
    const message = reply && reply.message ? reply.message : `${path}: HTTP ${response.status}`;
    throw new ApiError(response.status, reply, message);
  }
  return reply;
}

// -- status: header, buttons, services ---------------------------------------------------------

const poll = { timer: null, running: false, again: false };

function schedulePoll(delay) {
  clearTimeout(poll.timer);
  poll.timer = setTimeout(pollStatus, delay);
}

async function pollStatus() {
  if (poll.running) {
    poll.again = true;
    return;
  }
  poll.running = true;
  try {
    applyStatus(await api("/api/status"));
  } catch (err) {
    applyStatusFailure(err);
  } finally {
    poll.running = false;
    schedulePoll(poll.again ? 0 : STATUS_POLL_MS);
    poll.again = false;
  }
}

/** After a command: now, and again once the backend's 1 s status cache has surely expired. */
function pollSoon() {
  schedulePoll(0);
  setTimeout(() => schedulePoll(0), 1100);
}

function applyStatus(status) {
  const recovered = !page.statusOk;
  const otherRun = page.runId !== null && status.run_id !== page.runId;
  if (otherRun) forgetRun();
  page.status = status;
  page.statusOk = true;
  page.runId = status.run_id;
  setText("run-id", status.run_id);
  if (isNumber(status.stalled_s)) {
    const why = `running, but nothing advanced for ${fmtInt(status.stalled_s)} s`;
    showRunState(`stalled (${fmtInt(status.stalled_s)} s)`, "stalled", why);
  } else showRunState(status.state, status.state);
  renderProgress(status);
  renderServices(status.services || []);
  updateButtons();
  if (recovered || otherRun) refreshAll();
}

function applyStatusFailure(err) {
  page.statusOk = false;
  const wasStopped = page.status && page.status.state === "stopped";
  if (err.status === 401) showRunState("not signed in", "unreachable", err.message);
  else if (wasStopped && err.status === 0) showRunState("stopped", "stopped", err.message); // the dashboard ended too
  else showRunState("run not reachable", "unreachable", err.message);
  $("services").classList.add("stale");
  updateButtons();
}

function showRunState(text, kind, title = "") {
  const badge = $("run-state");
  badge.textContent = text;
  badge.dataset.state = kind;
  badge.title = title;
}

function renderProgress(status) {
  const step = status.ltime ? status.ltime.env_step : 0;
  const total = status.total_env_steps;
  const percent = total > 0 ? ((100 * step) / total).toFixed(1) : "0.0";
  const parts = [`${fmtInt(step)} / ${fmtInt(total)} env steps (${percent}%)`];
  if (status.ltime) parts.push(`iteration ${status.ltime.iteration}`);
  parts.push(`${isNumber(status.sps) ? fmtInt(status.sps) : "–"} SPS`);
  parts.push(`return ${fmtNum(status.return_mean)}`);
  if (status.waiting_for) parts.push(`waiting for ${status.waiting_for}`);
  setText("progress", parts.join(" · "));
}

function renderServices(services) {
  const table = $("services");
  table.classList.remove("stale");
  table.tBodies[0].replaceChildren(...services.map(serviceRow));
}

function serviceRow(s) {
  return el("tr", { title: `pid ${s.pid}, rank ${s.rank}, bus messages lost: ${s.missed}` }, [
    cell(s.service),
    cell(s.role),
    el("td", {}, el("span", { class: `health health-${s.health}`, text: s.health })),
    cell(s.ltime ? s.ltime.iteration : null, "num"),
    cell(s.ltime ? fmtInt(s.ltime.env_step) : null, "num"),
    cell(isNumber(s.cpu_percent) ? s.cpu_percent.toFixed(0) : null, "num"),
    cell(isNumber(s.rss_mb) ? `${s.rss_mb.toFixed(0)} MiB` : null, "num"),
    cell(isNumber(s.last_seen_s) ? `${s.last_seen_s.toFixed(1)} s` : null, "num"),
  ]);
}

/** Each button is enabled when the run's state allows it and its own request is not pending. */
function updateButtons() {
  const state = page.statusOk && page.status ? page.status.state : null;
  const live = state !== null && state !== "stopping" && state !== "stopped";
  const allowed = {
    "btn-pause": state === "running",
    "btn-resume": state === "paused",
    "btn-checkpoint": state === "running" || PAUSED_STATES.has(state),
    "btn-stop": live,
    "patch-submit": live,
  };
  for (const [id, ok] of Object.entries(allowed)) $(id).disabled = !ok || page.inFlight.has(id);
}

// -- the buttons -------------------------------------------------------------------------------

function describePause(reply) {
  if (reply.already) return `pause ${reply.pause}: already paused`;
  const previews = reply.previews ? `, ${reply.previews} previews coming` : "";
  return `pause ${reply.pause}: paused in ${(reply.latency_s * 1000).toFixed(1)} ms${previews}`;
}

function describeResume(reply) {
  return reply.already ? "not paused: nothing to resume" : `resumed after ${reply.paused_s.toFixed(1)} s paused`;
}

function describeCheckpoint(reply) {
  if (reply.scheduled) return "checkpoint scheduled: taken at the first iteration boundary after resume";
  const seconds = isNumber(reply.seconds) ? ` in ${reply.seconds.toFixed(2)} s` : "";
  return `checkpoint ${reply.path} (${fmtBytes(reply.bytes)}${seconds})`;
}

function describeStop(reply) {
  const checkpoint = reply.checkpoint ? `; checkpoint ${reply.checkpoint}` : "";
  return `stop: ${reply.message || "stopping"}${checkpoint}`;
}

/** POST a command from a button: the button stays disabled while the request is in flight. */
async function runCommand(buttonId, path, body, describe, after = null) {
  page.inFlight.add(buttonId);
  updateButtons();
  setText("action-message", `${path.replace("/api/", "")}…`);
  try {
    setText("action-message", describe(await api(path, body)));
  } catch (err) {
    setText("action-message", err.message);
  } finally {
    page.inFlight.delete(buttonId);
    updateButtons();
    pollSoon();
    if (after) after();
  }
}

function wireButtons() {
  $("btn-pause").addEventListener("click", () => runCommand("btn-pause", "/api/pause", {}, describePause));
  $("btn-resume").addEventListener("click", () => runCommand("btn-resume", "/api/resume", {}, describeResume));
  $("btn-checkpoint").addEventListener("click", () =>
    runCommand("btn-checkpoint", "/api/checkpoint", {}, describeCheckpoint, () => loadSoon("checkpoints"))
  );
  $("btn-stop").addEventListener("click", () => {
    if (!window.confirm("Stop the run? A last checkpoint is taken first.")) return;
    runCommand("btn-stop", "/api/stop", { checkpoint: true }, describeStop);
  });
}

// -- loading the REST snapshots ------------------------------------------------------------------

const LOADERS = {
  params: loadParams, history: loadHistory, metrics: loadMetrics, checkpoints: loadCheckpoints, videos: loadVideos,
};
const loadTimers = {};

async function runLoader(name) {
  try {
    await LOADERS[name]();
  } catch (err) {
    console.warn(`dashboard: could not load ${name}: ${err.message}`);
    if (name === "params" && !page.params.length) {
      setText("patch-message", `hyperparameters unavailable: ${err.message}`);
    }
  }
}

/** Load soon, once: bursts of events (several services applying one patch) cost one request. */
function loadSoon(name, delay = 300) {
  clearTimeout(loadTimers[name]);
  loadTimers[name] = setTimeout(() => runLoader(name), delay);
}

function refreshAll() {
  for (const name of Object.keys(LOADERS)) loadSoon(name, 0);
}

/** Another run answers now: what the page knew belongs to the old one. */
function forgetRun() {
  page.rows = [];
  page.iterations.clear();
  page.numericColumns.clear();
  page.hyperNames.clear();
  page.journal.clear();
  page.pauses = [];
  page.previewNotes.clear();
  renderJournal();
  scheduleRedraw();
}

async function loadMetrics() {
  const data = await api("/api/metrics");
  const columns = data.columns || [];
  addMetricRows((data.rows || []).map((values) => Object.fromEntries(columns.map((c, i) => [c, values[i]]))));
}

async function loadParams() {
  const data = await api("/api/params");
  page.params = data.params || [];
  for (const p of page.params) page.hyperNames.add(p.name);
  renderPatchForm(page.params);
  renderParamOptions();
  renderMetricOptions(); // the tunables' columns leave the metric list
  scheduleRedraw();
}

async function loadHistory() {
  addJournalEntries((await api("/api/history")).entries || []);
}

async function loadCheckpoints() {
  renderCheckpoints((await api("/api/checkpoints")).checkpoints || []);
}

async function loadVideos() {
  renderMedia(await api("/api/videos"));
}

// -- metrics rows ------------------------------------------------------------------------------

/** Add rows not plotted yet (deduped by iteration), keeping them sorted. */
function addMetricRows(rows) {
  let added = 0;
  for (const row of rows) {
    if (!isNumber(row.iteration) || page.iterations.has(row.iteration)) continue;
    page.iterations.add(row.iteration);
    row[TIME_LABEL] = isNumber(row.time) ? timeLabel(row.time) : null;
    for (const [name, value] of Object.entries(row)) if (isNumber(value)) page.numericColumns.add(name);
    page.rows.push(row);
    added += 1;
  }
  if (!added) return;
  page.rows.sort((a, b) => a.iteration - b.iteration);
  renderMetricOptions();
  renderParamOptions();
  scheduleRedraw();
}

/** A metrics.train event as a metrics.csv row (the logger flattens it the same way). */
function onTrainMetrics(event) {
  const body = event.body;
  const hyper = body.hyperparameters || {};
  for (const name of Object.keys(hyper)) page.hyperNames.add(name);
  const { iteration, env_steps, sps, return_mean, length_mean, episodes } = body;
  const row = { iteration, env_steps, sps, return_mean, length_mean, episodes, time: event.ts };
  Object.assign(row, body.values, hyper); // as the logger does: the algorithm's scalars, then the tunables
  addMetricRows([row]);
}

/** A tunable's column, not a metric. Without /api/params (a stopped run) the dotted public names
 *  (`ppo.lr`, `run.total_env_steps`) are the only clue. */
function isHyperColumn(name) {
  return page.hyperNames.has(name) || (!page.params.length && name.includes("."));
}

function metricColumns() {
  const names = [...page.numericColumns].filter((n) => !AXIS_COLUMNS.has(n) && !isHyperColumn(n));
  const rank = (n) => (FIRST_METRICS.includes(n) ? FIRST_METRICS.indexOf(n) : FIRST_METRICS.length);
  return names.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

function numericParamNames() {
  const numeric = (p) => /\b(int|float)\b/.test(p.type) && typeof p.value !== "boolean";
  if (page.params.length) return page.params.filter(numeric).map((p) => p.name);
  return [...page.numericColumns].filter(isHyperColumn).sort();
}

/** Fill a <select> with `names` (only when they changed), keeping what is selected. */
function fillSelect(select, names, isSelected) {
  if (!keyChanged(select, names.join("\n"))) return;
  select.replaceChildren(
    ...names.map((name) => {
      const option = el("option", { value: name, text: name });
      option.selected = isSelected(name);
      return option;
    })
  );
}

function renderMetricOptions() {
  fillSelect($("metric-select"), metricColumns(), (n) => page.selectedMetrics.has(n));
}

function renderParamOptions() {
  const names = numericParamNames();
  if (!names.includes(page.selectedParam)) page.selectedParam = names.includes("ppo.lr") ? "ppo.lr" : names[0] || null;
  fillSelect($("param-select"), names, (n) => n === page.selectedParam);
  $("param-select").value = page.selectedParam || "";
}

// -- pauses (control.state) and patches (control.patch) ------------------------------------------

/** A pause runs from the first pausing/paused state to the next state that is neither. */
function onRunStateEvent(event) {
  const state = event.body.state;
  if (page.statusOk && page.status && page.status.state !== state) {
    page.status.state = state; // the bus is faster than the next status poll: show a pause at once
    showRunState(state, state);
    updateButtons();
  }
  const last = page.pauses[page.pauses.length - 1];
  const open = last !== undefined && last.end === null;
  if (PAUSED_STATES.has(state) && !open) page.pauses.push({ start: event.ts, end: null });
  else if (open && !PAUSED_STATES.has(state)) last.end = event.ts;
  else if (!open) return; // running as before: nothing to redraw
  scheduleRedraw(); // an open pause grows with every beacon
}

function addJournalEntries(entries) {
  let added = 0;
  for (const entry of entries) {
    const key = `${entry.patch_id}|${entry.service}`;
    if (page.journal.has(key)) continue;
    page.journal.set(key, entry);
    added += 1;
  }
  if (!added) return;
  renderJournal();
  scheduleRedraw();
}

function describeChanges(changes) {
  return Object.entries(changes)
    .map(([name, change]) => `${name} ${fmtValue(change.old)} -> ${fmtValue(change.new)}`)
    .join(", ");
}

function journalItem(entry) {
  const minibatch = entry.minibatch === null || entry.minibatch === undefined ? "" : `, minibatch ${entry.minibatch}`;
  const where = `at iteration ${entry.ltime.iteration}, env step ${entry.ltime.env_step}${minibatch}`;
  const text = ` ${describeChanges(entry.changes)} by ${entry.service} ${where} (${entry.author})`;
  const title = `patch ${entry.patch_id}, ${new Date(entry.time * 1000).toLocaleString()}`;
  return el("li", { title }, [el("span", { class: "when", text: clockOf(entry.time) }), text]);
}

/** Newest first. */
function renderJournal() {
  const entries = [...page.journal.values()].sort((a, b) => b.time - a.time);
  const list = $("journal");
  if (entries.length) list.replaceChildren(...entries.map(journalItem));
  else list.replaceChildren(el("li", { class: "muted", text: "no patch yet" }));
}

/** One marker per (patch, tunable), at its first application: several services apply one patch. */
function patchMarkers() {
  const byKey = new Map();
  for (const entry of page.journal.values()) {
    for (const [name, change] of Object.entries(entry.changes)) {
      const key = `${entry.patch_id}|${name}`;
      const known = byKey.get(key);
      if (known && known.time <= entry.time) continue;
      byKey.set(key, {
        name,
        time: entry.time,
        envStep: entry.ltime.env_step,
        text: `${name} ${fmtValue(change.old)} -> ${fmtValue(change.new)} (${entry.author})`,
      });
    }
  }
  return [...byKey.values()];
}

// -- charts ------------------------------------------------------------------------------------

const redraw = { pending: false, last: 0 };

/** Redraw soon, at most every REDRAW_MS: events can come much faster than that. */
function scheduleRedraw() {
  if (redraw.pending) return;
  redraw.pending = true;
  setTimeout(() => {
    redraw.pending = false;
    redraw.last = Date.now();
    drawCharts();
  }, Math.max(0, redraw.last + REDRAW_MS - Date.now()));
}

function drawCharts() {
  try {
    drawMetricsChart();
    drawParamsChart();
  } catch (err) {
    console.error("dashboard: drawing the charts failed", err);
  }
}

function xOf(row) {
  return page.xaxis === "time" ? row[TIME_LABEL] : row.env_steps;
}

/** The numeric points of one column, against the chosen x axis. */
function series(name) {
  const x = [];
  const y = [];
  for (const row of page.rows) {
    const value = row[name];
    const at = xOf(row);
    if (isNumber(value) && at !== null && at !== undefined) {
      x.push(at);
      y.push(value);
    }
  }
  return { x, y };
}

function xAxisLayout(anchor) {
  const time = page.xaxis === "time";
  return { type: time ? "date" : "linear", title: { text: time ? "time" : "env steps" }, anchor, automargin: true };
}

function baseLayout() {
  const font = { family: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size: 12 };
  return { margin: { l: 64, r: 16, t: 12, b: 44 }, font, hovermode: "closest", showlegend: false };
}

/** Shaded pauses, on the time axis only (no env step passes while paused). */
function pauseShapes() {
  if (page.xaxis !== "time") return [];
  const now = page.lastBusTs !== null ? page.lastBusTs : Date.now() / 1000;
  return page.pauses.map((pause) => ({
    type: "rect", xref: "x", yref: "paper", y0: 0, y1: 1, layer: "below", line: { width: 0 },
    fillcolor: "rgba(212, 140, 0, 0.16)",
    x0: timeLabel(pause.start),
    x1: timeLabel(pause.end !== null ? pause.end : Math.max(now, pause.start)),
  }));
}

function selectedMetricNames() {
  const names = metricColumns().filter((n) => page.selectedMetrics.has(n));
  return names.length ? names : ["return_mean"];
}

/** One stacked subplot per selected metric (their scales differ), sharing the x axis. */
function drawMetricsChart() {
  const chart = $("chart-metrics");
  const shapes = pauseShapes();
  chart.dataset.points = String(series("return_mean").y.length);
  chart.dataset.pauses = String(shapes.length);
  if (!window.Plotly) return;
  const names = selectedMetricNames();
  const gap = 0.05;
  const height = (1 - gap * (names.length - 1)) / names.length;
  const layout = { ...baseLayout(), height: Math.min(900, Math.max(380, 90 + 160 * names.length)), shapes };
  const traces = names.map((name, i) => {
    const axis = i === 0 ? "y" : `y${i + 1}`;
    const top = 1 - i * (height + gap);
    const title = { text: name, font: { size: 11 } };
    layout[i === 0 ? "yaxis" : `yaxis${i + 1}`] = { domain: [Math.max(0, top - height), top], title, automargin: true };
    const points = series(name);
    const mode = points.x.length < 60 ? "lines+markers" : "lines";
    return { type: "scatter", mode, name, x: points.x, y: points.y, yaxis: axis, marker: { size: 4 } };
  });
  layout.xaxis = xAxisLayout(names.length === 1 ? "y" : `y${names.length}`);
  layout.uirevision = `${page.xaxis}|${names.join(",")}`; // keep the user's zoom across updates
  Plotly.react(chart, traces, layout, PLOT_CONFIG);
}

/** A y range around `values`. Plotly pads a constant series by ±1, which flattens a learning
 *  rate of 0.0025 onto zero; a tunable is constant most of the time. */
function paddedRange(values) {
  if (!values.length) return undefined;
  const lo = values.reduce((a, b) => Math.min(a, b));
  const hi = values.reduce((a, b) => Math.max(a, b));
  const pad = hi > lo ? (hi - lo) * 0.08 : Math.abs(lo) * 0.1 || 1;
  return [lo - pad, hi + pad];
}

/** The chosen tunable as a step line, with a dashed line and a hover triangle per patch. */
function drawParamsChart() {
  const chart = $("chart-params");
  const time = page.xaxis === "time";
  const markers = patchMarkers()
    .map((m) => ({ ...m, x: time ? timeLabel(m.time) : m.envStep }))
    .filter((m) => m.x !== null && m.x !== undefined);
  chart.dataset.markers = String(markers.length);
  if (!window.Plotly) return;
  const name = page.selectedParam;
  const points = name ? series(name) : { x: [], y: [] };
  const colorOf = (m) => (m.name === name ? MARKER_COLOR : OTHER_MARKER_COLOR);
  const lines = markers.map((m) => ({
    type: "line", xref: "x", yref: "paper", y0: 0, y1: 1,
    x0: m.x, x1: m.x, line: { dash: "dash", width: 1.5, color: colorOf(m) },
  }));
  const traces = [
    { type: "scatter", mode: "lines", line: { shape: "hv" }, name: name || "", x: points.x, y: points.y },
    {
      type: "scatter", mode: "markers", name: "patches", yaxis: "y2", hoverinfo: "text",
      x: markers.map((m) => m.x), y: markers.map(() => 1), hovertext: markers.map((m) => m.text),
      marker: { symbol: "triangle-down", size: 11, color: markers.map(colorOf) },
    },
  ];
  const layout = { ...baseLayout(), height: 280, xaxis: xAxisLayout("y"), uirevision: `${page.xaxis}|${name}` };
  layout.yaxis = { title: { text: name || "" }, automargin: true, range: paddedRange(points.y) };
  layout.yaxis2 = { overlaying: "y", range: [0, 1.08], visible: false, fixedrange: true }; // the triangles' row
  layout.shapes = [...pauseShapes(), ...lines];
  Plotly.react(chart, traces, layout, PLOT_CONFIG);
}

function wireChartControls() {
  $("metric-select").addEventListener("change", (event) => {
    page.selectedMetrics = new Set([...event.target.selectedOptions].map((o) => o.value));
    scheduleRedraw();
  });
  $("xaxis-select").addEventListener("change", (event) => {
    page.xaxis = event.target.value;
    scheduleRedraw();
  });
  $("param-select").addEventListener("change", (event) => {
    page.selectedParam = event.target.value || null;
    scheduleRedraw();
  });
}

// -- the patch form ----------------------------------------------------------------------------

/** e.g. `float > 0`, `float in [0, 1]`, `float in (0, 1]` (as `dynamicrl params` says it). */
function allowedRange(p) {
  const hasMin = p.minimum !== null && p.minimum !== undefined;
  const hasMax = p.maximum !== null && p.maximum !== undefined;
  if (hasMin && hasMax) {
    const lo = `${p.exclusive_minimum ? "(" : "["}${fmtG(p.minimum)}`;
    const hi = `${fmtG(p.maximum)}${p.exclusive_maximum ? ")" : "]"}`;
    return `${p.type} in ${lo}, ${hi}`;
  }
  if (hasMin) return `${p.type} ${p.exclusive_minimum ? ">" : ">="} ${fmtG(p.minimum)}`;
  if (hasMax) return `${p.type} ${p.exclusive_maximum ? "<" : "<="} ${fmtG(p.maximum)}`;
  return p.type;
}

function paramRow(p) {
  const id = `param-${p.name}`;
  return el("tr", { "data-row-for": p.name }, [
    el("td", {}, [
      el("label", { for: id, class: "param-name", text: p.name }),
      el("div", { class: "muted small", text: p.description }),
    ]),
    el("td", {}, [
      el("input", { type: "text", id, "data-param": p.name, autocomplete: "off", spellcheck: "false" }),
      el("span", { class: "field-error", "data-error-for": p.name }),
    ]),
    el("td", { class: "current" }),
    el("td", {}, [el("div", { text: allowedRange(p) }), el("div", { class: "muted small", text: p.apply })]),
  ]);
}

/** Rows are rebuilt only when the set of tunables changes, so typing is never interrupted. */
function renderPatchForm(params) {
  const body = $("patch-rows");
  if (keyChanged(body, params.map((p) => p.name).join("\n"))) body.replaceChildren(...params.map(paramRow));
  for (const p of params) {
    const row = body.querySelector(`tr[data-row-for="${CSS.escape(p.name)}"]`);
    row.querySelector("input").placeholder = fmtValue(p.value);
    row.querySelector(".current").textContent = fmtValue(p.value);
  }
}

function patchInputs() {
  return [...document.querySelectorAll("#patch-form input[data-param]")];
}

function errorSpanFor(name) {
  return document.querySelector(`#patch-form [data-error-for="${CSS.escape(name)}"]`);
}

function clearFieldErrors() {
  for (const span of document.querySelectorAll("#patch-form .field-error")) span.textContent = "";
}

/** What the user typed: JSON when it parses (0.001, true, null), the raw text otherwise. */
function parseValue(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function collectChanges() {
  const changes = {};
  for (const input of patchInputs()) {
    const text = input.value.trim();
    if (text !== "") changes[input.dataset.param] = parseValue(text);
  }
  return changes;
}

/** null when empty, a whole number, or undefined when it is neither. */
function parseAtIteration() {
  const text = $("patch-at-iteration").value.trim();
  if (text === "") return null;
  return /^\d+$/.test(text) ? Number(text) : undefined;
}

/** The tunable a problem is about: the controller names it (`ppo.lr`), the request validation
 *  names where in the body (`changes.ppo.lr`, or `changes.ppo.lr.int` for a list or an object). */
function fieldOf(where) {
  const path = where.replace(/^changes\./, "");
  return page.params.map((p) => p.name).find((name) => path === name || path.startsWith(`${name}.`));
}

/** Each problem beside its field, the controller's message below the form. */
function showPatchProblems(err) {
  const problems = err.status === 422 && err.body.problems ? err.body.problems : {};
  for (const [where, message] of Object.entries(problems)) {
    const name = fieldOf(where);
    const span = name ? errorSpanFor(name) : null;
    if (span) span.textContent = message;
  }
  setText("patch-message", err.message);
}

const PATCH_STATUS = {
  pending: "accepted, applies at its apply point",
  on_resume: "accepted, applies on resume",
  scheduled: "scheduled",
  applied: "applied",
};

async function submitPatch(event) {
  event.preventDefault();
  clearFieldErrors();
  const changes = collectChanges();
  if (!Object.keys(changes).length) {
    setText("patch-message", "nothing to patch: type a new value in at least one field");
    return;
  }
  const atIteration = parseAtIteration();
  if (atIteration === undefined) {
    setText("patch-message", "at iteration: a whole number of iterations, or empty for the next apply point");
    return;
  }
  page.inFlight.add("patch-submit");
  updateButtons();
  setText("patch-message", `patching ${Object.keys(changes).join(", ")}…`);
  try {
    // accepted, not applied: a patch sent while paused applies on resume, and the journal shows it then
    const reply = await api("/api/patch", { changes, at_iteration: atIteration, wait: false });
    setText("patch-message", `patch ${reply.patch_id}: ${PATCH_STATUS[reply.status] || reply.status}`);
    for (const input of patchInputs()) input.value = "";
    $("patch-at-iteration").value = "";
    addJournalEntries(reply.applied || []);
    loadSoon("params", 0);
    loadSoon("history", 0);
  } catch (err) {
    showPatchProblems(err);
  } finally {
    page.inFlight.delete("patch-submit");
    updateButtons();
  }
}

// -- checkpoints and media -----------------------------------------------------------------------

function renderCheckpoints(list) {
  const body = $("checkpoints").tBodies[0];
  const rows = list.map((c) =>
    el("tr", { title: c.path }, [
      cell(c.name),
      cell(c.kind),
      cell(c.iteration, "num"),
      cell(fmtInt(c.env_step), "num"),
      cell(fmtBytes(c.bytes), "num"),
      cell(c.retention, "small"),
    ])
  );
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "no checkpoint yet" })));
  body.replaceChildren(...rows);
}

function renderMedia(data) {
  renderClip((data.videos || [])[0]);
  renderPreviews((data.pauses || [])[0]);
}

function renderClip(clip) {
  const video = $("clip");
  if (!clip) {
    video.hidden = true;
    setText("clip-caption", "no clip yet");
    return;
  }
  // only a new clip reloads the element: the same one keeps playing
  if (video.src !== new URL(clip.url, window.location.href).href) video.src = clip.url;
  video.hidden = false;
  const caption = [
    `iteration ${clip.iteration}`,
    `${fmtInt(clip.env_step)} env steps`,
    `return ${fmtNum(clip.episode_return)}`,
    `length ${clip.length}`,
  ];
  setText("clip-caption", caption.join(" · "));
}

function renderPreviews(latest) {
  const box = $("previews");
  const notes = [...page.previewNotes.entries()].sort((a, b) => b[0] - a[0]);
  const newest = notes.length ? notes[0] : null;
  if (newest && newest[1].error && (!latest || newest[0] > latest.pause)) {
    keyChanged(box, "");
    box.replaceChildren();
    setText("previews-caption", `pause ${newest[0]}: no previews (${newest[1].error})`);
    return;
  }
  if (!latest) {
    keyChanged(box, "");
    box.replaceChildren();
    setText("previews-caption", "no previews yet");
    return;
  }
  if (keyChanged(box, `${latest.pause}:${latest.images.map((i) => i.name).join(",")}`)) {
    box.replaceChildren(
      ...latest.images.map((image) =>
        el("a", { href: image.url, target: "_blank", rel: "noopener", title: image.name }, [
          el("img", { src: image.url, alt: image.name, loading: "lazy" }),
        ])
      )
    );
  }
  const note = page.previewNotes.get(latest.pause);
  const where = note ? ` at iteration ${note.ltime.iteration}, env step ${fmtInt(note.ltime.env_step)}` : "";
  setText("previews-caption", `pause ${latest.pause}${where} · ${latest.images.length} scenes`);
}

function onPreviews(event) {
  page.previewNotes.set(event.body.pause, { ltime: event.body.ltime, error: event.body.error });
  loadSoon("videos");
}

// -- the event stream --------------------------------------------------------------------------

const BUS_HANDLERS = {
  "metrics.train": onTrainMetrics,
  "control.state": onRunStateEvent,
  "control.patch": (event) => {
    addJournalEntries([event.body.entry]);
    loadSoon("params"); // the current values changed
  },
  "control.checkpoint_saved": () => loadSoon("checkpoints"),
  "metrics.video": () => loadSoon("videos"),
  "metrics.previews": onPreviews,
};

function handleBusEvent(event) {
  if (!event) return;
  if (isNumber(event.ts)) page.lastBusTs = Math.max(page.lastBusTs || 0, event.ts);
  const handler = BUS_HANDLERS[event.topic];
  if (!handler) return; // metrics.sys, metrics.episode, ...: the status poll covers them
  try {
    handler(event);
  } catch (err) {
    console.error(`dashboard: bad ${event.topic} event`, err, event);
  }
}

function describeGap(gap) {
  if (gap.restarted) return "the dashboard restarted: events in between are unknown";
  if (gap.on_bus) return `the dashboard missed ${gap.missed} bus messages from ${gap.sender}`;
  return `missed ${gap.missed} events`;
}

/** Events were lost: say so, and read the snapshots again so the curves fill in. */
function handleGap(gap) {
  const notice = $("gap-notice");
  notice.textContent = `${describeGap(gap || {})} (${new Date().toLocaleTimeString()}); curves and journal re-read`;
  notice.hidden = false;
  catchUp();
}

function catchUp() {
  for (const name of ["metrics", "history", "checkpoints", "videos"]) loadSoon(name, 500);
}

function setConnection(live) {
  const indicator = $("connection");
  indicator.textContent = live ? "live" : "reconnecting";
  indicator.dataset.live = String(live);
}

/** The browser reconnects by itself with Last-Event-ID; only when it gives up (a refused request)
 *  is a new stream opened, which starts at the newest event, so the snapshots are read again. */
function openEventStream() {
  const source = new EventSource("/api/events");
  source.onopen = () => setConnection(true);
  source.onerror = () => {
    setConnection(false);
    if (source.readyState !== EventSource.CLOSED) return;
    setTimeout(() => {
      openEventStream();
      catchUp();
    }, STREAM_RETRY_MS);
  };
  source.addEventListener("bus", (message) => handleBusEvent(parseJson(message.data)));
  source.addEventListener("gap", (message) => handleGap(parseJson(message.data)));
}

// -- start ---------------------------------------------------------------------------------------

function start() {
  wireButtons();
  wireChartControls();
  $("patch-form").addEventListener("submit", submitPatch);
  renderJournal();
  renderCheckpoints([]);
  drawCharts();
  openEventStream();
  pollStatus(); // its first answer loads the snapshots
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
