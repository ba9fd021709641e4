// so8t dashboard: state, API access, sidebar, routing (#run=ID), live updates (SSE), charts.
import { Chart, fmtValue } from "./chart.js";
import { COLORS, LABELS, CHARTS, KIND_SERIES, runKind, COMPARE_SERIES } from "./series.js";
import {
  $, h, badge, fmtAgo, fmtTime, fmtInt, buildGauges, updateGauges, renderSession, renderValues,
  renderAlerts, renderCheckpoints, renderEvents, renderEvals, renderPipeline, renderSidebar, seriesStats, renderErrorBanner, showNotice,
} from "./panels.js";

const TOKEN = new URLSearchParams(location.search).get("token");

const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569", "#ea580c"];

const state = {
  config: { refresh_secs: 5, max_points: 1000, thresholds: {} },
  runs: [], pipelines: [],
  view: null,            // {kind: "run"|"pipeline", id}
  runKind: "sft",        // the shown run's session kind: "sft" | "rl" (which charts and series)
  interval: 5, auto: true,
  ov: null, events: [], data: null, zoom: null,
  verified: new Map(),   // checkpoint path → {check, problem, pending, error}
  es: null, retry: 0, gen: 0, fetching: false, fetchSeq: 0, pending: [],
  compare: [], compareSeries: "loss", lastCompare: 0,
  pipe: null, pipeTimer: 0, errors: new Map(),
};
const charts = {};

// ---- API -------------------------------------------------------------------------------------
export function apiUrl(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== "") q.set(k, v);
  if (TOKEN) q.set("token", TOKEN);
  const s = q.toString();
  return `/api/${path}${s ? `?${s}` : ""}`;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, params) {
  const url = apiUrl(path, params);
  // a request the page's head started early (index.html), used once
  const early = window.so8tEarly?.get(url);
  if (early) { window.so8tEarly.delete(url); performance.mark(`early:${path}`); }
  let r;
  try {
    r = await (early || fetch(url, { cache: "no-store" }));
  } catch (e) {
    throw new ApiError(0, "cannot reach the dashboard server");
  }
  let body = null;
  try { body = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) throw new ApiError(r.status, body?.error || `${r.status} ${r.statusText}`);
  return body;
}

// ---- errors (#error-banner) ------------------------------------------------------------------
function setError(src, msg) {
  state.errors.set(src, msg);
  renderErrorBanner([...state.errors.values()]);
}
function clearError(src) {
  if (state.errors.delete(src)) renderErrorBanner([...state.errors.values()]);
}

// ---- routing ---------------------------------------------------------------------------------
function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  if (p.get("cmp")) state.compare = p.get("cmp").split(",").filter(Boolean);
  if (p.get("cs")) state.compareSeries = p.get("cs");
  if (p.get("pipeline")) return { kind: "pipeline", id: p.get("pipeline") };
  if (p.get("run")) return { kind: "run", id: p.get("run") };
  return null;
}
function writeHash() {
  const p = new URLSearchParams();
  if (state.view) p.set(state.view.kind, state.view.id);
  if (state.compare.length) p.set("cmp", state.compare.join(","));
  if (state.compareSeries !== "loss") p.set("cs", state.compareSeries);
  const s = `#${p.toString().replace(/%2F/g, "/").replace(/%2C/g, ",")}`;
  if (location.hash !== s) history.replaceState(null, "", s);
}

// ---- sidebar ---------------------------------------------------------------------------------
function renderRuns(list) {
  state.runs = list.runs || [];
  state.pipelines = list.pipelines || [];
  renderSidebar(state.runs, state.pipelines, {
    view: state.view, compare: state.compare, runsDir: state.config.runs_dir,
    onSelect: (v) => select(v), onCompare: (id, on) => toggleCompare(id, on),
  });
  renderCompareRuns();
  updateHeader();
}

async function loadRuns(pending) {
  try {
    renderRuns(await (pending || api("runs")));
    clearError("runs");
  } catch (e) {
    setError("runs", `Run list: ${e.message}`);
  }
}

// ---- view switching --------------------------------------------------------------------------
function select(view) {
  const same = state.view && view && state.view.kind === view.kind && state.view.id === view.id;
  state.view = view;
  writeHash();
  if (same) return;
  disconnect();
  state.gen++;
  state.ov = null; state.events = []; state.data = null; state.zoom = null; state.pipe = null; state.pending = [];
  state.verified = new Map();
  if (view?.kind === "run") setRunKind(state.runs.find((r) => r.id === view.id)?.kind);
  // Ask the server first: the requests run while the page below resets itself.
  const loading = view?.kind === "run" ? loadRun() : null;
  clearError("run"); clearError("pipeline"); clearError("stream"); clearError("metrics");
  renderAlerts([]);
  for (const c of Object.values(charts)) if (c !== charts.compare) { c.setZoom(null); c.setStats(null); c.setBands([]); c.setData({}); c.setMessage("Loading…"); }
  $("#zoom-chip").hidden = true;
  $("#pipeline").dataset.key = "";
  renderRuns({ runs: state.runs, pipelines: state.pipelines });
  $("#notice").hidden = true;
  $("#view-run").hidden = view?.kind !== "run";
  $("#pipeline").hidden = true;
  document.body.dataset.view = view?.kind || "none";
  if (loading) loading.catch(() => {}).then(connect);
  else if (view?.kind === "pipeline") { loadPipeline(); connect(); }
  else {
    connect();
    const err = state.errors.get("config") || state.errors.get("runs");
    if (err) showNotice("Cannot load the runs", /401|authori|token/i.test(err) ? `${err}. Open the page with its token: /?token=TOKEN` : err);
    else showNotice("No runs yet", `Start a training run (so8t train) with its run folder under ${state.config.runs_dir || "the runs folder"}; it appears here automatically.`);
  }
  schedulePoll();
}

function updateHeader() {
  const v = state.view;
  const kind = $("#view-kind"), title = $("#view-title"), sub = $("#view-sub"), meta = $("#view-meta");
  if (!v) { kind.textContent = "so8t"; title.textContent = "Dashboard"; sub.textContent = state.config.runs_dir || ""; meta.replaceChildren(); return; }
  if (v.kind === "pipeline") {
    const p = state.pipelines.find((x) => x.id === v.id);
    kind.textContent = "Pipeline";
    title.textContent = p?.name || v.id;
    sub.textContent = p?.path || v.id;
    meta.replaceChildren(p ? badge(p.status) : h("span"));
    document.title = `${p?.name || v.id} · so8t dashboard`;
    return;
  }
  const r = state.runs.find((x) => x.id === v.id);
  const s = state.ov?.session;
  kind.textContent = r?.pipeline ? `Run · pipeline ${r.pipeline}` : "Run";
  title.textContent = v.id;
  sub.textContent = state.ov?.path || r?.path || "";
  const upd = s?.updated_ms || r?.updated_ms;
  const step = s?.step ?? r?.step;
  document.title = `${step != null ? `${step}/${s?.total_steps ?? r?.total_steps ?? "?"} · ` : ""}${v.id} · so8t dashboard`;
  meta.replaceChildren(
    upd ? h("span", { class: "muted", text: `updated ${fmtAgo(upd)}` }) : h("span"),
    s || r ? badge(s?.status || r?.status) : h("span"));
}

// ---- one run ---------------------------------------------------------------------------------
function metricsParams(extra = {}) {
  return { run: state.view.id, series: KIND_SERIES[state.runKind].join(","), points: state.config.max_points, ...extra };
}

async function loadRun() {
  const gen = state.gen;
  const id = state.view.id;
  try {
    const z = state.zoom;
    const [ov, m] = await Promise.all([api("run", { run: id, stats: z ? null : 0 }), api("run/metrics", metricsParams(z ? { from: z.from, to: z.to } : {}))]);
    if (gen !== state.gen) return;
    performance.mark("run-data");
    clearError("run");
    $("#notice").hidden = true;
    $("#view-run").hidden = false;
    // First load: the whole-run statistics come from the curves' own pass (one scan, not two).
    if (!ov.stats && m.stats) ov.stats = m.stats;
    applyOverview(ov, true);
    setMetrics(m);
    performance.mark("run-shown");
  } catch (e) {
    if (gen !== state.gen) return;
    const known = state.runs.find((r) => r.id === id);
    if (e.status === 404 && !state.ov) {
      setError("run", `Run “${id}” not found: ${e.message}`);
      $("#view-run").hidden = true;
      showNotice(`Run “${id}” not found`, known ? "Its folder or database has disappeared. The page retries on every refresh." : `There is no run “${id}” in ${state.config.runs_dir || "the runs folder"}. Pick a run from the list on the left.`);
    } else if (!state.ov) {
      setError("run", `Run “${id}” cannot be read: ${e.message}`);
      $("#view-run").hidden = true;
      showNotice(`Run “${id}” cannot be read`, e.message);
    } else {
      setError("run", `Run “${id}”: ${e.message}`);
    }
    throw e;
  }
}

/** Shows the charts and values of a run of `kind` (sft | rl) and hides the others'. */
function setRunKind(kind) {
  state.runKind = runKind(kind);
  document.body.dataset.runKind = state.runKind;
  $("#curves-title").textContent = state.runKind === "rl" ? "RL curves" : "Training curves";
}

function applyOverview(ov, full) {
  state.ov = { ...state.ov, ...ov };
  renderSession(ov);
  renderValues(ov.latest);
  updateGauges($("#gauges"), ov.gauges, ov.levels);
  $("#gauges-note").textContent = ov.gauges && ov.gauges.gpu_util_pct == null && ov.gauges.vram_pct == null ? "no GPU reading" : "";
  renderAlerts(ov.alerts);
  renderCheckpoints(ov.checkpoints, ov.rolling, state.verified, verify);
  if (full || !state.events.length) state.events = ov.events || [];
  else if (ov.events?.length) {
    const seen = new Set(state.events.map((e) => e.id));
    state.events = [...ov.events.filter((e) => !seen.has(e.id)), ...state.events].sort((a, b) => b.id - a.id).slice(0, 200);
  }
  renderEvents(state.events);
  renderEvals(ov.evals);
  if (ov.session?.kind && runKind(ov.session.kind) !== state.runKind) {
    // the run list did not know the kind (or it changed): the other charts, and their series
    setRunKind(ov.session.kind);
    if (state.data) refetchMetrics(true);
  }
  const bands = (curve) => (ov.transitions || []).filter((t) => (t.curve || "loss") === curve).map((t) => ({
    start: t.start, end: t.end, label: t.direction === "steeper" ? "↘" : t.direction === "flatter" ? (curve === "loss" ? "→" : "↗") : "",
    title: `${curve === "loss" ? "phase" : curve} transition ${t.start}–${t.end}: ${t.direction}${t.peak_z != null ? `, peak z ${fmtValue(t.peak_z, 3)}` : ""}`,
  }));
  for (const [name, c] of Object.entries(CHARTS)) {
    if (c.bands) charts[name].setBands(bands(c.bands));
    charts[name].setStats(ov.stats ? Object.fromEntries(c.series.map((k) => [k, ov.stats[k]]).filter(([, v]) => v)) : null);
  }
  updateHeader();
  const run = state.runs.find((r) => r.id === state.view?.id);
  if (run?.pipeline && !state.pipe) loadPipeline(run.pipeline);
}

/** Replaces the chart data with a /api/run/metrics answer. */
function setMetrics(m) {
  const values = {};
  for (const k of KIND_SERIES[state.runKind]) {
    const v = m.values?.[k] || {};
    values[k] = { mean: v.mean || new Array(m.step.length).fill(null) };
    if (v.min && v.max) { values[k].min = v.min; values[k].max = v.max; }
  }
  state.data = { x: m.step || [], time: m.time_ms || [], bucket: m.bucket, total: m.total, values };
  for (const rows of state.pending.splice(0)) appendRows(rows, true);
  drawCharts();
}

function drawCharts() {
  const d = state.data;
  if (!d) return;
  for (const [name, c] of Object.entries(CHARTS)) {
    if (c.kind && c.kind !== state.runKind) continue;
    const map = {};
    for (const k of c.series) map[k] = { x: d.x, ...(d.values[k] || { mean: new Array(d.x.length).fill(null) }) };
    charts[name].setData(map);
    charts[name].refreshCsvHref();
  }
  const z = state.zoom;
  const info = d.x.length ? `${fmtInt(d.x.length)} points${d.bucket > 1 ? ` · ${fmtInt(d.bucket)} steps per point (band: min–max)` : " · every step"}` : "";
  $("#curves-info").textContent = info;
  const chip = $("#zoom-chip");
  chip.hidden = !z;
  if (z) chip.replaceChildren(`Zoom: steps ${fmtInt(z.from)} – ${fmtInt(z.to)}`, h("button", { type: "button", class: "chip-x", title: "Reset zoom", text: "✕", onclick: () => zoomTo(null) }));
}

function appendRows(rows, replay = false) {
  const d = state.data;
  if (!rows?.step?.length) return;
  if (!d || state.fetching) { if (!replay) state.pending.push(rows); return; }
  if (rows.truncated) { refetchMetrics(); return; }
  if (state.zoom) return;
  let last = d.x.length ? d.x[d.x.length - 1] : -Infinity;
  let added = 0;
  for (let i = 0; i < rows.step.length; i++) {
    const s = rows.step[i];
    if (s <= last) continue;
    last = s;
    d.x.push(s);
    d.time.push(rows.time_ms?.[i] ?? null);
    for (const k of Object.keys(d.values)) {
      const v = rows.values?.[k]?.mean?.[i] ?? null;
      const t = d.values[k];
      t.mean.push(v);
      if (t.min) { t.min.push(v); t.max.push(v); }
    }
    added++;
  }
  if (!added || replay) return;
  drawCharts();
  if (d.x.length > 2 * state.config.max_points) refetchMetrics();
}

/** Re-fetches the curves (downsampled, or the zoomed range); a newer call supersedes an older. */
async function refetchMetrics(force = false) {
  if ((state.fetching && !force) || state.view?.kind !== "run") return;
  state.fetching = true;
  const gen = state.gen, seq = ++state.fetchSeq;
  const z = state.zoom;
  try {
    const m = await api("run/metrics", metricsParams(z ? { from: z.from, to: z.to } : {}));
    if (gen !== state.gen || seq !== state.fetchSeq) return;
    state.fetching = false;
    setMetrics(m);
    clearError("metrics");
  } catch (e) {
    if (gen === state.gen && seq === state.fetchSeq) setError("metrics", `Curves: ${e.message}`);
  } finally {
    if (seq === state.fetchSeq) state.fetching = false;
  }
}

function zoomTo(range) {
  if (state.view?.kind !== "run") return;
  state.zoom = range;
  for (const [name] of Object.entries(CHARTS)) charts[name].setZoom(range);
  state.pending = [];
  drawCharts();
  refetchMetrics(true);
}

async function verify(path) {
  state.verified.set(path, { pending: true });
  renderCheckpoints(state.ov?.checkpoints, state.ov?.rolling, state.verified, verify);
  try {
    const r = await api("run/verify", { run: state.view.id, path });
    state.verified.set(path, { check: r.check, problem: r.problem });
  } catch (e) {
    state.verified.set(path, { error: `verify failed: ${e.message}` });
  }
  renderCheckpoints(state.ov?.checkpoints, state.ov?.rolling, state.verified, verify);
}

// ---- live updates ----------------------------------------------------------------------------
function setLive(s, text) {
  const el = $("#live-status");
  el.dataset.state = s;
  el.textContent = text || { live: `live · ${state.interval} s`, connecting: "connecting…", error: "offline · retrying", off: "paused" }[s];
}

function disconnect() {
  if (state.es) { state.es.close(); state.es = null; }
  clearTimeout(state.retry);
  if (!state.auto) setLive("off");
}

function connect() {
  disconnect();
  if (!state.auto || state.view?.kind !== "run") { setLive(state.auto ? "live" : "off", state.auto ? `polling · ${state.interval} s` : undefined); return; }
  setLive("connecting");
  const d = state.data;
  const after = d?.x.length && !state.zoom ? d.x[d.x.length - 1] : d?.total ?? 0;
  const es = new EventSource(apiUrl("stream", { run: state.view.id, interval: state.interval, after }));
  state.es = es;
  const gen = state.gen;
  es.addEventListener("open", () => { setLive("live"); clearError("stream"); });
  es.addEventListener("update", (e) => {
    if (gen !== state.gen) return;
    const u = JSON.parse(e.data);
    clearError("run"); clearError("stream");
    if ($("#view-run").hidden) { $("#view-run").hidden = false; $("#notice").hidden = true; }
    applyOverview(u, false);
    appendRows(u.rows);
    if (Date.now() - state.lastCompare > Math.max(10, state.interval * 3) * 1000) loadCompare();
  });
  es.addEventListener("runs", (e) => { renderRuns(JSON.parse(e.data)); clearError("runs"); });
  es.addEventListener("gone", (e) => {
    let msg = "the run's folder or database disappeared";
    try { msg = JSON.parse(e.data).error || msg; } catch (_) { /* keep default */ }
    setError("run", `Run “${state.view.id}” is unavailable: ${msg}`);
  });
  es.onerror = () => {
    if (gen !== state.gen) return;
    if (es.readyState === EventSource.CLOSED) {
      setLive("error");
      // the stream was refused (unknown / unreadable run, server down): find out why, retry later
      state.retry = setTimeout(async () => {
        if (gen !== state.gen || !state.auto) return;
        await loadRuns();
        try { if (!state.data) await loadRun(); else clearError("stream"); } catch (_) { /* shown by loadRun */ }
        if (gen === state.gen && state.auto) connect();
      }, state.interval * 1000);
    } else {
      setLive("connecting");
      setError("stream", "Lost the connection to the dashboard server; reconnecting…");
    }
  };
}

/** Polls what has no stream: the pipeline panel (and the run list in the pipeline view). */
function schedulePoll() {
  clearInterval(state.pipeTimer);
  if (!state.auto) return;
  state.pipeTimer = setInterval(() => {
    if (state.view?.kind === "pipeline" || !state.view) {
      loadRuns().then(() => { if (!state.view && state.runs.length) select({ kind: "run", id: state.runs[0].id }); });
    }
    if (state.pipe || state.view?.kind === "pipeline") loadPipeline(state.pipe?.id);
    if (state.view?.kind !== "run") updateHeader();
  }, state.interval * 1000);
}

async function refreshAll() {
  const btn = $("#refresh-now");
  btn.classList.add("spinning");
  try {
    await loadRuns();
    if (state.view?.kind === "run") {
      try { await loadRun(); } catch (_) { /* shown */ }
      if (state.pipe) await loadPipeline(state.pipe.id);
      if (state.auto) connect();
    } else if (state.view?.kind === "pipeline") { await loadPipeline(); connect(); }
    else if (state.runs.length) select({ kind: "run", id: state.runs[0].id });
    else connect();
    await loadCompare();
  } finally {
    setTimeout(() => btn.classList.remove("spinning"), 300);
  }
}

// ---- pipeline --------------------------------------------------------------------------------
async function loadPipeline(id) {
  const gen = state.gen;
  const pid = id || (state.view?.kind === "pipeline" ? state.view.id : null);
  if (!pid) return;
  const box = $("#pipeline");
  try {
    const p = await api("pipeline", { pipeline: pid });
    if (gen !== state.gen) return;
    state.pipe = { id: pid, data: p };
    clearError("pipeline");
    box.hidden = false;
    $("#notice").hidden = true;
    renderPipeline(box, { id: pid, ...p }, {
      fileUrl: (path) => apiUrl("pipeline/file", { pipeline: pid, path }),
      onRun: (r) => select({ kind: "run", id: r }),
      currentRun: state.view?.kind === "run" ? state.view.id : null,
    });
    if (state.view?.kind === "pipeline") updateHeader();
  } catch (e) {
    if (gen !== state.gen) return;
    setError("pipeline", `Pipeline “${pid}”: ${e.message}`);
    if (state.view?.kind === "pipeline" && !state.pipe) showNotice(`Pipeline “${pid}” ${e.status === 404 ? "not found" : "cannot be read"}`, e.message);
  }
}

// ---- compare ---------------------------------------------------------------------------------
function toggleCompare(id, on) {
  state.compare = state.compare.filter((x) => x !== id);
  if (on) state.compare.push(id);
  writeHash();
  renderCompareRuns();
  loadCompare();
}

function renderCompareRuns() {
  const box = $("#compare-runs");
  if (!state.compare.length) {
    box.replaceChildren(h("span", { class: "muted", text: "Tick the boxes next to two or more runs in the sidebar to overlay them here." }));
    return;
  }
  box.replaceChildren(...state.compare.map((id, i) => h("span", { class: "chip on", "data-run": id },
    h("i", { style: `background:${PALETTE[i % PALETTE.length]}` }), id,
    h("button", { type: "button", class: "chip-x", title: "Remove", text: "✕", onclick: () => toggleCompare(id, false) }))));
  for (const cb of document.querySelectorAll("#run-list .cmp")) cb.checked = state.compare.includes(cb.closest(".run-item").dataset.run);
}

async function loadCompare() {
  const c = charts.compare;
  state.lastCompare = Date.now();
  const runs = state.compare.slice();
  c.setSubtitle(LABELS[state.compareSeries] || state.compareSeries);
  if (runs.length < 2) {
    c.setSeries([]);
    c.setStats(null);
    c.setData({});
    c.setMessage(runs.length ? "Pick at least one more run to compare" : "No runs picked for comparison");
    clearError("compare");
    return;
  }
  try {
    const r = await api("compare", { runs: runs.join(","), series: state.compareSeries, points: state.config.max_points });
    const defs = [], map = {};
    (r.runs || []).forEach((x, i) => {
      const color = PALETTE[runs.indexOf(x.run) >= 0 ? runs.indexOf(x.run) % PALETTE.length : i % PALETTE.length];
      defs.push({ key: x.run, label: x.error ? `${x.run} (unreadable)` : x.run, color });
      if (!x.error) map[x.run] = { x: x.step || [], mean: x.mean || [], ...(x.min && x.max ? { min: x.min, max: x.max } : {}) };
    });
    c.setSeries(defs);
    c.setStats(seriesStats(map));
    c.setData(map);
    c.setMessage(Object.keys(map).length ? null : "None of the picked runs can be read");
    const errs = (r.runs || []).filter((x) => x.error).map((x) => `${x.run}: ${x.error}`);
    if (errs.length) setError("compare", `Compare: ${errs.join("; ")}`); else clearError("compare");
  } catch (e) {
    setError("compare", `Compare: ${e.message}`);
  }
}

// ---- setup -----------------------------------------------------------------------------------
function makeCharts() {
  for (const [name, c] of Object.entries(CHARTS)) {
    charts[name] = new Chart(document.querySelector(`.chart[data-chart="${name}"]`), {
      title: c.title, subtitle: c.sub, height: c.height || 190, logToggle: c.logToggle, yFixed: c.yFixed, nonNegative: c.nonNegative,
      series: c.series.map((k) => ({ key: k, label: LABELS[k] || k, color: COLORS[k], width: k === "loss_smooth" ? 2.2 : k === "loss" ? 1.2 : undefined })),
      hidden: c.hidden, group: "run", onZoom: (r) => zoomTo(r),
      timeOf: (step) => {
        const d = state.data;
        if (!d) return null;
        const i = d.x.indexOf(step);
        return i >= 0 && d.time[i] ? fmtTime(d.time[i]) : null;
      },
      filename: () => `${(state.view?.id || "run").replace(/\//g, "_")}-${name}`,
      csv: () => {
        if (state.view?.kind !== "run") return null;
        const ch = charts[name];
        const vis = c.series.filter((k) => !ch.hidden.has(k));
        const z = state.zoom;
        return {
          href: apiUrl("run/csv", { run: state.view.id, series: (vis.length ? vis : c.series).join(","), from: z?.from, to: z?.to }),
          filename: `${state.view.id.replace(/\//g, "_")}-${name}.csv`,
        };
      },
    });
  }
  charts.compare = new Chart(document.querySelector('.chart[data-chart="compare"]'), {
    title: "Comparison", height: 260, logToggle: true, series: [],
    csv: () => charts.compare.dataCsv(`compare-${state.compareSeries}.csv`),
    filename: () => `compare-${state.compareSeries}`,
    onZoom: (r) => { charts.compare.setZoom(r); charts.compare.render(); },
  });
}

function setupControls() {
  const range = $("#refresh-interval"), out = $("#refresh-value"), auto = $("#auto-refresh");
  range.value = state.interval;
  out.textContent = `${state.interval} s`;
  let debounce = 0;
  const apply = () => {
    clearTimeout(debounce);
    out.textContent = `${range.value} s`;
    if (Number(range.value) === state.interval) return;
    state.interval = Number(range.value);
    schedulePoll();
    connect(); // reconnects the stream with the new interval (or updates the polling label)
  };
  range.addEventListener("input", () => { out.textContent = `${range.value} s`; clearTimeout(debounce); debounce = setTimeout(apply, 400); });
  range.addEventListener("change", apply);
  auto.checked = state.auto;
  auto.addEventListener("change", () => {
    state.auto = auto.checked;
    schedulePoll();
    if (state.auto) refreshAll(); else disconnect();
  });
  $("#refresh-now").addEventListener("click", () => refreshAll());
  const sel = $("#compare-series");
  const names = (state.config.series || COMPARE_SERIES).filter((s) => s !== "in_transition");
  if (!names.includes(state.compareSeries)) names.unshift(state.compareSeries);
  sel.replaceChildren(...names.map((s) => h("option", { value: s, text: LABELS[s] && LABELS[s] !== s ? `${s} (${LABELS[s]})` : s })));
  sel.value = state.compareSeries;
  sel.addEventListener("change", () => { state.compareSeries = sel.value; writeHash(); loadCompare(); });
  $("#compare-clear").addEventListener("click", () => { state.compare = []; writeHash(); renderCompareRuns(); renderRuns({ runs: state.runs, pipelines: state.pipelines }); loadCompare(); });
  window.addEventListener("hashchange", () => {
    const before = `${state.compare}|${state.compareSeries}`;
    const v = readHash();
    if (v && (v.kind !== state.view?.kind || v.id !== state.view?.id)) select(v);
    if (`${state.compare}|${state.compareSeries}` !== before) {
      sel.value = state.compareSeries;
      renderRuns({ runs: state.runs, pipelines: state.pipelines });
      loadCompare();
    }
  });
  // relative times in the sidebar and header stay fresh without a fetch
  setInterval(() => {
    for (const el of document.querySelectorAll("#run-list .run-item")) {
      const r = state.runs.find((x) => x.id === el.dataset.run);
      const t = el.querySelector(".ri-ago");
      if (r && t) t.textContent = fmtAgo(r.updated_ms);
    }
    updateHeader();
  }, 10000);
}

async function init() {
  performance.mark("init");
  // The configuration and the run list are fetched together; the charts are built meanwhile.
  for (const [k, list] of Object.entries(KIND_SERIES)) {
    if (window.so8tEarlySeries !== undefined && window.so8tEarlySeries[k] !== list.join(",")) {
      console.warn(`index.html's early ${k} series differ from the charts':`, window.so8tEarlySeries[k]);
    }
  }
  const config = api("config");
  const runs = api("runs");
  runs.catch(() => {});
  makeCharts();
  performance.mark("charts-built");
  try {
    state.config = { ...state.config, ...(await config) };
    clearError("config");
  } catch (e) {
    setError("config", e.status === 401 ? `Not authorized: ${e.message}` : `Configuration: ${e.message}`);
  }
  state.interval = Math.min(30, Math.max(1, Math.round(state.config.refresh_secs || 5)));
  $("#version").textContent = state.config.version ? ` v${state.config.version}` : "";
  $("#runs-dir").textContent = state.config.runs_dir || "";
  buildGauges($("#gauges"), state.config);
  const wanted = readHash();
  setupControls();
  performance.mark("controls");
  await loadRuns(runs);
  performance.mark("runs-shown");
  await window.so8tEarlyReady; // the early requests are registered (or not needed)
  // By default the newest run that can be read (a corrupted one is listed, not opened).
  const first = state.runs.find((r) => r.status !== "unreadable") || state.runs[0];
  select(wanted || (first ? { kind: "run", id: first.id } : state.pipelines[0] ? { kind: "pipeline", id: state.pipelines[0].id } : null));
  window.so8tEarly?.clear(); // an early request the first view did not take is never used later
  renderCompareRuns();
  loadCompare();
}

init();
