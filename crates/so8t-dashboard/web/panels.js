// so8t dashboard: the overview widgets (session, values, gauges, alerts, checkpoints, events,
// evaluations, pipeline). Pure DOM rendering from the API's JSON; no state of their own except
// what is passed in.

import { fmtValue } from "./chart.js";

export const $ = (sel, root = document) => root.querySelector(sel);

/** Creates an element: h("div", {class: "x", text: "y", onclick: f}, child, …). */
export function h(tag, attrs = {}, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") n.className = v;
    else if (k === "text") n.textContent = v;
    else if (k === "html") n.innerHTML = v; // only ever our own constant markup
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? "" : v);
  }
  for (const c of kids.flat()) if (c != null && c !== false) n.append(c);
  return n;
}

const setText = (id, text) => {
  const n = document.getElementById(id);
  if (n && n.textContent !== String(text)) n.textContent = text;
  return n;
};

// ---- formatting ------------------------------------------------------------------------------
export function fmtDuration(s) {
  if (s == null || !Number.isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (d) return `${d}d ${hr}h ${String(m).padStart(2, "0")}m`;
  if (hr) return `${hr}h ${String(m).padStart(2, "0")}m ${String(sec).padStart(2, "0")}s`;
  if (m) return `${m}m ${String(sec).padStart(2, "0")}s`;
  return `${sec}s`;
}

export function fmtBytes(b) {
  if (b == null) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i && b < 100 ? 1 : 0)} ${u[i]}`;
}

export function fmtTime(ms, withDate = true) {
  if (ms == null || !ms) return "–";
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  const time = d.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (!withDate || today) return time;
  return `${d.toLocaleDateString("en-CA")} ${time}`;
}

export function fmtAgo(ms) {
  if (!ms) return "";
  const s = (Date.now() - ms) / 1000;
  if (s < 5) return "just now";
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export const fmtInt = (v) => (v == null ? "–" : Number(v).toLocaleString("en-US"));

export function badge(status, extra = "") {
  return h("span", { class: `badge ${extra}`, "data-status": status || "unknown", text: status || "unknown" });
}

/** Sets a badge element's status in place. */
function setBadge(el, status) {
  status = status || "unknown";
  if (el.dataset.status !== status) el.dataset.status = status;
  if (el.textContent !== status) el.textContent = status;
}

// ---- banners ---------------------------------------------------------------------------------
/** #error-banner: hidden without messages, else one line per message. */
export function renderErrorBanner(msgs) {
  const b = document.getElementById("error-banner");
  b.hidden = !msgs.length;
  b.replaceChildren(...msgs.map((m) => h("div", { class: "err-line" }, h("span", { class: "err-icon", text: "!" }), m)));
}

/** The #notice card in place of the run view (unknown run, unreadable run, no runs). */
export function showNotice(title, text) {
  const n = document.getElementById("notice");
  n.hidden = false;
  n.replaceChildren(h("div", { class: "notice-icon", text: "?" }), h("div", {}, h("h2", { text: title }), h("p", { text })));
}

// ---- session + progress ----------------------------------------------------------------------
export function renderSession(ov) {
  const s = ov.session || {};
  const p = ov.progress || {};
  setText("session-id", s.id || "–");
  setBadge(document.getElementById("session-status"), s.status);
  setText("session-step", s.step ?? "–");
  setText("session-total", s.total_steps ?? "–");
  setText("session-epoch", s.epoch ?? "–");
  setText("session-started", fmtTime(s.started_ms));
  document.getElementById("session-started").title = s.started_ms ? new Date(s.started_ms).toString() : "";
  setText("session-best", s.best_loss != null ? fmtValue(s.best_loss) : "–");
  setText("session-resumed", s.resumed_from_step != null ? `step ${fmtInt(s.resumed_from_step)}` : "fresh run");
  setText("session-ckpt", s.last_checkpoint_ms ? `${fmtTime(s.last_checkpoint_ms)} (${fmtAgo(s.last_checkpoint_ms)})` : "–");
  setText("session-pid", s.pid ?? "–");
  const err = document.getElementById("session-error");
  err.hidden = !s.error;
  if (s.error) setText("session-error", s.error);
  const pct = p.percent ?? (s.total_steps ? (100 * (s.step || 0)) / s.total_steps : 0);
  const bar = document.getElementById("progress-bar");
  const pv = Math.max(0, Math.min(100, pct || 0));
  bar.setAttribute("data-percent", pv.toFixed(1));
  bar.setAttribute("aria-valuenow", pv.toFixed(1));
  bar.dataset.status = s.status || "";
  bar.firstElementChild.style.width = `${pv}%`;
  setText("progress-text", `${pv.toFixed(1)} %`);
  setText("elapsed", fmtDuration(p.elapsed_s));
  const eta = setText("eta", p.eta_s != null ? fmtDuration(p.eta_s) : s.status === "completed" ? "done" : "–");
  eta.title = p.eta_s != null ? `finishes ≈ ${fmtTime(Date.now() + p.eta_s * 1000)}` : "";
  setText("step-time", p.step_time_s != null ? `${fmtValue(p.step_time_s, 3)} s` : "–");
}

// ---- current values --------------------------------------------------------------------------
export function renderValues(latest) {
  const l = latest || {};
  for (const k of ["loss", "ce", "pet", "orth", "lr", "alpha", "pet_lambda", "grad_norm"]) setText(`val-${k}`, fmtValue(l[k]));
  setText("val-tokens_per_s", l.tokens_per_s != null ? Math.round(l.tokens_per_s).toLocaleString("en-US") : "–");
  setText("val-tokens", l.tokens != null ? fmtInt(l.tokens) : "–");
  const ph = document.getElementById("val-phase");
  ph.textContent = l.phase || "–";
  ph.dataset.phase = l.phase || "";
  setText("val-loss-sub", l.loss_smooth != null ? `EMA ${fmtValue(l.loss_smooth)}` : "");
  // RL runs keep their terms in `extra`
  const x = l.extra || {};
  for (const k of ["reward", "kl", "beta", "entropy"]) setText(`val-${k}`, fmtValue(x[k]));
  for (const k of ["accuracy", "clip_fraction"]) setText(`val-${k}`, x[k] != null ? `${(100 * x[k]).toFixed(1)} %` : "–");
  setText("val-reward-sub", x.reward_smooth != null ? `EMA ${fmtValue(x.reward_smooth)}` : "");
  setText("values-step", l.step != null ? `step ${fmtInt(l.step)} · ${fmtTime(l.time_ms)}` : "no metrics yet");
}

// ---- gauges ----------------------------------------------------------------------------------
export const GAUGES = [
  { key: "cpu_pct", label: "CPU", unit: "%", max: 100 },
  { key: "ram_pct", label: "RAM", unit: "%", max: 100 },
  { key: "gpu_util_pct", label: "GPU util", unit: "%", max: 100 },
  { key: "vram_pct", label: "VRAM", unit: "%", max: 100 },
  { key: "gpu_temp_c", label: "GPU temp", unit: "°C", max: 100 },
];
const SVGNS = "http://www.w3.org/2000/svg";
const R = 40, CX = 50, CY = 50;
const pt = (f, r = R) => [CX - r * Math.cos(Math.PI * f), CY - r * Math.sin(Math.PI * f)];
const arc = (f) => {
  const [x0, y0] = pt(0), [x1, y1] = pt(Math.max(0.0001, Math.min(1, f)));
  return `M${x0},${y0} A${R},${R} 0 0 1 ${x1.toFixed(2)},${y1.toFixed(2)}`;
};

export function buildGauges(container, config) {
  const th = config?.thresholds || {};
  const ratio = config?.caution_ratio ?? 0.8;
  container.replaceChildren(...GAUGES.map((g) => {
    const t = th[g.key];
    const s = (tag, attrs) => {
      const n = document.createElementNS(SVGNS, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      return n;
    };
    const sv = s("svg", { viewBox: "0 0 100 60", class: "gauge-svg" });
    sv.append(s("path", { d: arc(1), class: "g-track" }));
    if (t != null) {
      // caution zone and red zone as thin outer arcs, plus a threshold tick
      const zone = (f0, f1, cls) => {
        const [a, b] = pt(f0, R + 8), [c, d] = pt(f1, R + 8);
        sv.append(s("path", { d: `M${a},${b} A${R + 8},${R + 8} 0 0 1 ${c},${d}`, class: cls }));
      };
      zone((t * ratio) / g.max, t / g.max, "g-zone caution");
      zone(t / g.max, 1, "g-zone danger");
      const [x0, y0] = pt(t / g.max, R - 7), [x1, y1] = pt(t / g.max, R + 10);
      sv.append(s("line", { x1: x0, y1: y0, x2: x1, y2: y1, class: "g-tick" }));
    }
    sv.append(s("path", { d: arc(0), class: "g-value" }));
    const el = h("div", { class: "gauge", "data-metric": g.key, "data-level": "none" },
      sv,
      h("div", { class: "g-num" }, h("b", { text: "n/a" }), h("span", { text: "" })),
      h("div", { class: "g-label", text: g.label }),
      h("div", { class: "g-th", text: t != null ? `limit ${t}${g.unit === "%" ? " %" : " °C"}` : "no limit" }));
    return el;
  }));
}

export function updateGauges(container, gauges, levels) {
  for (const g of GAUGES) {
    const el = container.querySelector(`.gauge[data-metric="${g.key}"]`);
    if (!el) continue;
    const v = gauges?.[g.key];
    const lv = v == null ? "none" : levels?.[g.key] || "green";
    if (el.getAttribute("data-level") !== lv) el.setAttribute("data-level", lv);
    el.querySelector(".g-value").setAttribute("d", arc(v == null ? 0 : v / g.max));
    el.querySelector(".g-num b").textContent = v == null ? "n/a" : v.toFixed(v >= 100 ? 0 : 1);
    el.querySelector(".g-num span").textContent = v == null ? "" : g.unit;
    el.title = v == null ? `${g.label}: no reading` : `${g.label}: ${v.toFixed(1)} ${g.unit} (${lv})`;
  }
}

// ---- alerts ----------------------------------------------------------------------------------
const ALERT_TITLE = { threshold: "Threshold", nan: "Non-finite loss", stalled: "Stalled", failed: "Failed" };
export function renderAlerts(alerts) {
  const box = document.getElementById("alerts");
  const key = JSON.stringify(alerts || []);
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  box.replaceChildren(...(alerts || []).map((a) => h("div", {
    class: "alert", "data-kind": a.kind, "data-level": a.level || "red", "data-metric": a.metric || null,
  }, h("span", { class: "alert-icon", text: a.level === "orange" ? "!" : "!!" }),
  h("b", { text: ALERT_TITLE[a.kind] || a.kind }),
  h("span", { class: "alert-msg", text: a.message }),
  a.since_ms ? h("span", { class: "alert-since", text: `since ${fmtTime(a.since_ms)}` }) : null)));
}

// ---- checkpoints -----------------------------------------------------------------------------
const CHECK_TEXT = { ok: "ok", damaged: "damaged", missing: "missing", "no-manifest": "no manifest" };
export function renderCheckpoints(list, rolling, verified, onVerify) {
  const t = document.getElementById("checkpoints");
  const key = JSON.stringify([list, [...verified]]);
  const roll = rolling ? `rolling ${rolling.count ?? "–"}${rolling.keep != null ? ` / ${rolling.keep} kept` : " (keep_rolling not set)"}` : "";
  setText("rolling", roll);
  if (t.dataset.key === key) return;
  t.dataset.key = key;
  const head = h("thead", {}, h("tr", {}, ...["Checkpoint", "Kind", "Step", "Size", "Created", "Check", ""].map((x) => h("th", { text: x }))));
  if (!list?.length) {
    t.replaceChildren(head, h("tbody", {}, h("tr", {}, h("td", { colspan: 7, class: "empty", text: "No checkpoints yet" }))));
    return;
  }
  const rows = list.flatMap((c) => {
    const v = verified.get(c.path);
    const check = v?.check || c.check || "unknown";
    const problem = v?.problem || c.problem;
    const name = c.path.split("/").pop();
    const btn = h("button", { class: "btn btn-mini verify", type: "button", "data-path": c.path, text: v?.pending ? "Verifying…" : "Verify",
      title: "Re-read every file and compare sha256 with the manifest", disabled: v?.pending || c.check === "missing" ? true : null,
      onclick: () => onVerify(c.path) });
    const note = [problem, v?.error].filter(Boolean).join(" · ");
    return [h("tr", { "data-path": c.path, "data-check": check, class: note ? "has-note" : null },
      h("td", { class: "mono", title: c.path }, name),
      h("td", {}, h("span", { class: "pill", "data-kind": c.kind, text: c.kind })),
      h("td", { class: "num", text: fmtInt(c.step) }),
      h("td", { class: "num", text: fmtBytes(c.bytes) }),
      h("td", { text: fmtTime(c.created_ms), title: c.created_ms ? new Date(c.created_ms).toString() : null }),
      h("td", {}, h("span", { class: "check", "data-check": check, title: problem || null },
        CHECK_TEXT[check] || check, v && !v.pending && !v.error ? h("small", { text: " · sha256" }) : null)),
      h("td", { class: "right" }, btn)),
    note ? h("tr", { class: "note-row" }, h("td", { colspan: 7 }, h("div", { class: "problem", text: note }))) : null].filter(Boolean);
  });
  t.replaceChildren(head, h("tbody", {}, ...rows));
}

// ---- events ----------------------------------------------------------------------------------
const EVENT_ICON = { start: "▶", resume: "↻", checkpoint: "◆", phase_transition: "∿", completed: "✓", interrupted: "❚❚", failed: "✕" };
export function renderEvents(events) {
  const box = document.getElementById("events");
  const key = events.length ? `${events.length}:${events[0].id}:${events[events.length - 1].id}` : "0";
  setText("events-count", events.length ? `${events.length} newest first` : "");
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  if (!events.length) {
    box.replaceChildren(h("li", { class: "empty", text: "No events yet" }));
    return;
  }
  box.replaceChildren(...events.map((e) => h("li", { class: "event", "data-kind": e.kind },
    h("span", { class: "ev-icon", text: EVENT_ICON[e.kind] || "•" }),
    h("div", { class: "ev-body" },
      h("div", { class: "ev-top" }, h("b", { text: (e.kind || "event").replace(/_/g, " ") }),
        e.step != null ? h("span", { class: "ev-step", text: `step ${fmtInt(e.step)}` }) : null,
        h("time", { text: fmtTime(e.time_ms), title: e.time_ms ? new Date(e.time_ms).toString() : null })),
      h("div", { class: "ev-msg", text: e.message || "" })))));
}

// ---- evaluations -----------------------------------------------------------------------------
function modelName(m) {
  if (m == null) return "–";
  if (typeof m === "string") return m;
  const p = m.store_model || m.name || m.path || m.file || m.model;
  if (typeof p === "string") return p.split("/").pop();
  const s = JSON.stringify(m);
  return s === "{}" ? "–" : s.length > 60 ? `${s.slice(0, 57)}…` : s;
}

/** Metrics of one task: numbers except *_stderr, with their stderr. */
function taskMetrics(obj) {
  if (typeof obj !== "object" || obj == null) return typeof obj === "number" ? [["value", obj, null]] : [];
  return Object.entries(obj).filter(([k, v]) => typeof v === "number" && !k.endsWith("_stderr"))
    .map(([k, v]) => [k, v, typeof obj[`${k}_stderr`] === "number" ? obj[`${k}_stderr`] : null]);
}

export function renderEvals(evals) {
  const box = document.getElementById("evals");
  const key = JSON.stringify(evals || []);
  setText("evals-count", evals?.length ? `${evals.length} recorded` : "");
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  if (!evals?.length) {
    box.replaceChildren(h("div", { class: "empty", text: "No evaluations recorded for this run" }));
    return;
  }
  const metricNames = [];
  for (const e of evals) for (const t of Object.values(e.summary || {})) for (const [k] of taskMetrics(t)) if (!metricNames.includes(k)) metricNames.push(k);
  const head = h("tr", {}, h("th", { text: "Label" }), h("th", { text: "Model" }), h("th", { text: "Task" }),
    ...metricNames.map((m) => h("th", { class: "num", text: m.replace(/_/g, " ") })));
  const rows = [];
  for (const e of evals) {
    const tasks = Object.entries(e.summary || {});
    if (!tasks.length) tasks.push(["–", {}]);
    tasks.forEach(([task, obj], i) => {
      const ms = Object.fromEntries(taskMetrics(obj).map(([k, v, se]) => [k, [v, se]]));
      rows.push(h("tr", { class: i === 0 ? "group-start" : "" },
        i === 0 ? h("td", { rowspan: tasks.length, class: "strong" }, e.label, h("div", { class: "muted small", text: fmtTime(e.time_ms) })) : null,
        i === 0 ? h("td", { rowspan: tasks.length, class: "mono small", title: JSON.stringify(e.model) }, modelName(e.model)) : null,
        h("td", { text: task }),
        ...metricNames.map((m) => {
          const x = ms[m];
          if (!x) return h("td", { class: "num muted", text: "–" });
          const [v, se] = x;
          const isRate = m !== "errors" && v >= 0 && v <= 1;
          return h("td", { class: "num" }, isRate ? `${(v * 100).toFixed(1)}%` : fmtValue(v),
            se != null ? h("small", { class: "muted", text: ` ±${isRate ? (se * 100).toFixed(1) : fmtValue(se, 2)}` }) : null);
        })));
    });
  }
  box.replaceChildren(h("table", { class: "table evals" }, h("thead", {}, head), h("tbody", {}, ...rows)));
}

// ---- pipeline --------------------------------------------------------------------------------
const pct = (v) => (typeof v === "number" ? `${(v * 100).toFixed(1)}%` : "–");
const pval = (v) => (typeof v !== "number" ? "–" : v < 1e-4 ? v.toExponential(1) : v.toFixed(4));
const ci = (c, scale = 100) => (c && typeof c.estimate === "number"
  ? `${c.estimate >= 0 ? "+" : ""}${(c.estimate * scale).toFixed(1)} [${(c.low * scale).toFixed(1)}, ${(c.high * scale).toFixed(1)}]` : "–");
const VERDICT = { BBetter: ["B better", "good"], BWorse: ["B worse", "bad"], NoSignificantDifference: ["no significant difference", "neutral"] };

function flatten(obj, prefix = "", out = []) {
  if (obj && typeof obj === "object" && !Array.isArray(obj)) {
    for (const [k, v] of Object.entries(obj)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else if (Array.isArray(obj)) {
    if (obj.length <= 8 && obj.every((x) => typeof x !== "object")) out.push([prefix, obj.join(", ")]);
    else out.push([prefix, `[${obj.length} items]`]);
  } else out.push([prefix, typeof obj === "number" ? fmtValue(obj) : String(obj)]);
  return out;
}

function renderAb(ab) {
  if (!ab) return h("div", { class: "empty", text: "No A/B result yet (steps/ab/ab.json appears when the ab step is done)" });
  if (Array.isArray(ab.tasks) && ab.tasks.length && ab.tasks[0].acc_a) {
    const head = ["Task", "n", "Acc A", "Acc B", "Δ acc, pts [95% CI]", "McNemar p", "p (Holm)", "Verdict", "Latency A / B"];
    const rows = ab.tasks.map((t) => {
      const [vt, cls] = VERDICT[t.verdict] || [String(t.verdict ?? "–"), "neutral"];
      return h("tr", {}, h("td", { class: "strong", text: t.task }), h("td", { class: "num", text: fmtInt(t.n) }),
        h("td", { class: "num", text: pct(t.acc_a?.value) }), h("td", { class: "num", text: pct(t.acc_b?.value) }),
        h("td", { class: "num", text: ci(t.acc_delta) }),
        h("td", { class: "num", text: pval(t.mcnemar?.p_value), title: t.mcnemar ? `b01=${t.mcnemar.b01}, b10=${t.mcnemar.b10}` : null }),
        h("td", { class: "num", text: pval(t.p_holm) }),
        h("td", {}, h("span", { class: `verdict ${cls}`, text: vt })),
        h("td", { class: "num", text: t.latency ? `${fmtValue(t.latency.median_a, 3)} / ${fmtValue(t.latency.median_b, 3)} s` : "–" }));
    });
    const names = ["a", "b"].map((k) => `${k.toUpperCase()}: ${modelName(ab[k]?.model ?? ab[k])}`).join("   ·   ");
    const s = ab.settings || {};
    return h("div", {}, h("div", { class: "ab-meta muted" }, names, s.alpha != null ? `   ·   α = ${s.alpha}, ${fmtInt(s.resamples)} bootstrap resamples` : ""),
      h("div", { class: "table-wrap" }, h("table", { class: "table" }, h("thead", {}, h("tr", {}, ...head.map((x) => h("th", { text: x })))), h("tbody", {}, ...rows))));
  }
  const rows = flatten(ab).slice(0, 80).map(([k, v]) => h("tr", {}, h("td", { class: "mono small", text: k }), h("td", { text: v })));
  return h("div", { class: "table-wrap" }, h("table", { class: "table kvtable" }, h("tbody", {}, ...rows)));
}

export function renderPipeline(box, p, { fileUrl, onRun, currentRun }) {
  const key = JSON.stringify(p) + currentRun;
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  const steps = p.steps || [];
  const track = h("div", { class: "pipe-track" }, ...steps.map((s, i) => h("div", { class: "pipe-node", "data-state": s.status },
    h("span", { class: "dot", text: s.status === "done" ? "✓" : s.status === "failed" ? "✕" : String(i + 1) }),
    h("span", { class: "pipe-name", text: s.name }))));
  const rows = steps.map((s) => {
    const pr = s.progress;
    let detail = null;
    if (pr && pr.total) {
      const f = Math.min(100, (100 * (pr.step || 0)) / pr.total);
      detail = h("div", { class: "pipe-progress" },
        h("div", { class: "progress small", "data-percent": f.toFixed(1) }, h("div", { class: "fill", style: `width:${f}%` })),
        h("span", { text: `${fmtInt(pr.step)} / ${fmtInt(pr.total)} · ${f.toFixed(1)}%${pr.eta_s != null ? ` · ETA ${fmtDuration(pr.eta_s)}` : ""}` }));
    } else if (pr) detail = h("span", { class: "muted small", text: JSON.stringify(pr) });
    return h("tr", { "data-step": s.name, "data-state": s.status },
      h("td", { class: "strong", text: s.name }),
      h("td", {}, badge(s.status)),
      h("td", { class: "num", text: s.seconds != null ? fmtDuration(s.seconds) : "–" }),
      h("td", { class: "num", text: s.attempts ? String(s.attempts) : "–" }),
      h("td", {}, detail, s.error ? h("div", { class: "problem", text: s.error }) : null));
  });
  const runs = (p.runs || []).map((r) => h("button", { class: "chip" + (r === currentRun ? " on" : ""), type: "button", text: r, onclick: () => onRun(r) }));
  const files = p.files || [];
  const imgs = files.filter((f) => /\.(svg|png)$/i.test(f.path));
  const docs = files.filter((f) => !/\.(svg|png)$/i.test(f.path));
  box.replaceChildren(...[
    h("div", { class: "card-head" }, h("h2", {}, "Pipeline ", h("span", { class: "mono", text: p.name || p.id || "" })), badge(p.status)),
    h("div", { class: "muted small mono", text: p.dir || "" }),
    p.error ? h("div", { class: "session-error", text: p.error }) : null,
    track,
    h("div", { class: "table-wrap tall" }, h("table", { class: "table pipe-steps" },
      h("thead", {}, h("tr", {}, ...["Step", "State", "Duration", "Attempts", "Progress / error"].map((x) => h("th", { text: x })))),
      h("tbody", {}, ...rows))),
    runs.length ? h("div", { class: "pipe-runs" }, h("span", { class: "muted", text: "Training runs:" }), ...runs) : null,
    h("h3", { class: "sub-head", text: "A/B comparison" }),
    renderAb(p.ab),
    files.length ? h("h3", { class: "sub-head", text: "Report" }) : null,
    docs.length ? h("div", { class: "pipe-files" }, ...docs.map((f) => h("a", { class: "file-link", href: fileUrl(f.path), target: "_blank", rel: "noopener" },
      h("b", { text: f.path.split("/").pop() }), h("small", { text: fmtBytes(f.bytes) })))) : null,
    imgs.length ? h("div", { class: "pipe-gallery" }, ...imgs.map((f) => h("figure", {},
      h("a", { href: fileUrl(f.path), target: "_blank", rel: "noopener" }, h("img", { src: fileUrl(f.path), alt: f.path, loading: "lazy" })),
      h("figcaption", { text: f.path.split("/").pop() })))) : null].filter(Boolean));
}

// ---- sidebar ---------------------------------------------------------------------------------
const PIPE_ICON = '<svg viewBox="0 0 16 16" width="13" height="13"><circle cx="3" cy="3" r="2" fill="currentColor"/><circle cx="13" cy="8" r="2" fill="currentColor"/><circle cx="3" cy="13" r="2" fill="currentColor"/><path d="M3 5v6M5 3h3a3 3 0 0 1 3 3v0M5 13h3a3 3 0 0 0 3-3" fill="none" stroke="currentColor" stroke-width="1.4"/></svg>';

/** A run id as "prefix/" (dim, shrinks first) + leaf (kept whole as long as possible). */
function runName(id) {
  const i = id.lastIndexOf("/");
  return h("span", { class: "ri-id" }, i >= 0 ? h("span", { class: "ri-prefix", text: id.slice(0, i + 1) }) : null,
    h("span", { class: "ri-leaf", text: id.slice(i + 1) }));
}

function navItem(cls, attrs, onSelect, ...kids) {
  const item = h("div", { class: cls, role: "option", tabindex: 0, ...attrs }, ...kids);
  item.addEventListener("click", onSelect);
  item.addEventListener("keydown", (e) => { if (e.key === "Enter") onSelect(); });
  return item;
}

/** Fills #runs and #pipeline-list (both inside #run-list). */
export function renderSidebar(runs, pipelines, { view, compare, runsDir, onSelect, onCompare }) {
  setText("run-count", runs.length || "");
  setText("pipeline-count", pipelines.length || "");
  const box = document.getElementById("runs");
  if (!runs.length) box.replaceChildren(h("div", { class: "side-empty", text: `No runs found in ${runsDir || "the runs folder"}` }));
  else box.replaceChildren(...runs.map((r) => {
    const pct = r.total_steps ? Math.min(100, (100 * (r.step || 0)) / r.total_steps) : 0;
    const cb = h("input", { type: "checkbox", class: "cmp", title: "Compare this run", checked: compare.includes(r.id) ? true : null,
      "aria-label": `Compare ${r.id}`, onclick: (e) => e.stopPropagation(), onchange: (e) => onCompare(r.id, e.target.checked) });
    const sel = view?.kind === "run" && view.id === r.id;
    return navItem(`run-item${sel ? " selected" : ""}`, {
      "data-run": r.id, "data-status": r.status, "aria-selected": sel ? "true" : "false",
      title: r.error ? `${r.id}\n${r.error}` : r.path || r.id,
    }, () => onSelect({ kind: "run", id: r.id }), cb, h("div", { class: "ri-main" },
      h("div", { class: "ri-top" }, runName(r.id), badge(r.status, "small")),
      h("div", { class: "ri-bar" }, h("div", { style: `width:${pct}%` })),
      h("div", { class: "ri-meta" }, h("span", { class: "ri-steps", text: `${r.step != null ? `${fmtInt(r.step)} / ${fmtInt(r.total_steps)}` : r.error ? "unreadable" : "–"}${r.kind === "rl" ? " · RL" : ""}` }),
        h("span", { class: "ri-ago", text: fmtAgo(r.updated_ms) }))));
  }));
  const pbox = document.getElementById("pipeline-list");
  if (!pipelines.length) pbox.replaceChildren(h("div", { class: "side-empty", text: "No pipelines" }));
  else pbox.replaceChildren(...pipelines.map((p) => {
    const sel = view?.kind === "pipeline" && view.id === p.id;
    return navItem(`pipeline-item${sel ? " selected" : ""}`, {
      "data-pipeline": p.id, "data-status": p.status, "aria-selected": sel ? "true" : "false",
      title: p.error ? `${p.id}\n${p.error}` : p.path || p.id,
    }, () => onSelect({ kind: "pipeline", id: p.id }), h("span", { class: "pi-icon", html: PIPE_ICON }), h("div", { class: "ri-main" },
      h("div", { class: "ri-top" }, h("span", { class: "ri-id", text: p.name || p.id }), badge(p.status, "small")),
      h("div", { class: "ri-meta" }, h("span", { class: "mono", text: p.id }))));
  }));
}

/** last / mean / min / max of chart data computed here (for the compare chart, which has no `stats`). */
export function seriesStats(map) {
  const stats = {};
  const ok = (x) => x != null && Number.isFinite(x);
  for (const [k, d] of Object.entries(map)) {
    const v = d.mean.filter(ok);
    if (!v.length) continue;
    const lo = (d.min || d.mean).filter(ok), hi = (d.max || d.mean).filter(ok);
    stats[k] = { last: v[v.length - 1], mean: v.reduce((a, b) => a + b, 0) / v.length, min: lo.reduce((a, b) => Math.min(a, b)), max: hi.reduce((a, b) => Math.max(a, b)) };
  }
  return stats;
}
