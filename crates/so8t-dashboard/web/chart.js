// so8t dashboard: a small SVG line chart (no dependencies).
// Features: several series with optional min/max bands, shaded x bands (phase transitions),
// hover crosshair + tooltip (synced across a group), drag-to-zoom, log scale, legend toggles,
// summary statistics, CSV / PNG / SVG export.

const NS = "http://www.w3.org/2000/svg";
const FONT = "Inter, ui-sans-serif, system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
const M = { left: 56, right: 16, top: 12, bottom: 26 };
const groups = new Map();

function svg(tag, attrs = {}, parent) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) n.setAttribute(k, v);
  if (parent) parent.appendChild(n);
  return n;
}

function h(tag, attrs = {}, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") n.className = v;
    else if (k === "text") n.textContent = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? "" : v);
  }
  for (const c of kids.flat()) if (c != null) n.append(c);
  return n;
}

/** Formats a number for axes and tooltips (compact, 4 significant digits). */
export function fmtValue(v, digits = 4) {
  if (v == null || Number.isNaN(v)) return "–";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "−∞";
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a < 1e-3 || a >= 1e7) return v.toExponential(Math.max(0, digits - 2)).replace(/\.?0+e/, "e");
  if (a >= 1e4) return Math.round(v).toLocaleString("en-US");
  return Number(v.toPrecision(digits)).toLocaleString("en-US", { maximumFractionDigits: 8 });
}

/** Formats a step count for the x axis: 950, 12.5k, 1.2M. */
export function fmtStep(v) {
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${+(v / 1e3).toFixed(1)}k`;
  return Math.round(v).toLocaleString("en-US");
}

function niceStep(range, count) {
  const raw = range / Math.max(1, count);
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
}

function linTicks(lo, hi, count) {
  const s = niceStep(hi - lo, count);
  const out = [];
  for (let v = Math.ceil(lo / s - 1e-9) * s; v <= hi + s * 1e-9; v += s) out.push(+v.toPrecision(12));
  return { ticks: out, step: s };
}

function logTicks(lo, hi) {
  const d0 = Math.floor(Math.log10(lo)), d1 = Math.ceil(Math.log10(hi));
  const pick = (mults) => {
    const out = [];
    for (let d = d0; d <= d1; d++) for (const m of mults) {
      const v = +(m * 10 ** d).toPrecision(12);
      if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
    }
    return out;
  };
  let t = pick([1, 2, 5]);
  if (t.length > 8) t = pick([1]);
  if (t.length < 3) t = pick([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  if (t.length > 8) t = t.filter((_, i) => i % Math.ceil(t.length / 6) === 0);
  return t;
}

function axisFormat(step, maxAbs) {
  if (maxAbs !== 0 && (maxAbs < 1e-2 || maxAbs >= 1e6)) return (v) => (v === 0 ? "0" : v.toExponential(1).replace(/\.0e/, "e"));
  const dec = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
  return (v) => v.toLocaleString("en-US", { minimumFractionDigits: dec, maximumFractionDigits: dec });
}

/** Nearest index of `x` in the sorted array `xs`. */
function nearest(xs, x) {
  let lo = 0, hi = xs.length - 1;
  if (hi < 0) return -1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < x) lo = mid; else hi = mid;
  }
  return Math.abs(xs[lo] - x) <= Math.abs(xs[hi] - x) ? lo : hi;
}

function download(href, filename) {
  const a = h("a", { href, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
}

export class Chart {
  /**
   * @param {HTMLElement} root the `.chart` element
   * @param {object} o title, series [{key,label,color}], height, logToggle, yFixed [lo,hi],
   *   unit, group, onZoom(range|null), csv() → {href, filename} | null, filename() → base name
   */
  constructor(root, o) {
    this.root = root;
    this.o = { height: 200, ...o };
    this.series = o.series || [];
    this.data = {};
    this.bands = [];
    this.stats = null;
    this.zoom = null;
    this.hidden = new Set(o.hidden || []);
    this.log = false;
    this.message = "Loading…";
    this.hoverX = null;
    this.build();
    if (o.group) {
      if (!groups.has(o.group)) groups.set(o.group, new Set());
      groups.get(o.group).add(this);
    }
    new ResizeObserver(() => this.invalidate()).observe(this.body);
  }

  /** Schedules one render for the next frame: several setters in a row (a run switch, a live
   * update) lay the page out once instead of once per setter. */
  invalidate() {
    if (this.raf) return;
    this.raf = requestAnimationFrame(() => {
      this.raf = 0;
      this.render();
    });
  }

  build() {
    const o = this.o;
    this.root.classList.add("card");
    this.root.setAttribute("data-points", "0");
    this.legend = h("div", { class: "legend" });
    this.logBtn = o.logToggle
      ? h("button", { class: "tool toggle-log", title: "Logarithmic y axis", text: "log", onclick: () => this.toggleLog() })
      : null;
    this.resetBtn = h("button", { class: "tool reset-zoom", title: "Reset zoom (or double-click the chart)", text: "Reset zoom", onclick: () => o.onZoom?.(null) });
    this.csvLink = h("a", { class: "tool export-csv", role: "button", href: "#", download: "", title: "Download the raw rows as CSV", text: "CSV" });
    this.csvLink.addEventListener("click", (e) => this.exportCsv(e));
    const tools = h("div", { class: "tools" },
      this.resetBtn, this.logBtn, this.csvLink,
      h("button", { class: "tool export-png", title: "Download as PNG", text: "PNG", onclick: () => this.exportPng() }),
      h("button", { class: "tool export-svg", title: "Download as SVG", text: "SVG", onclick: () => this.exportSvg() }));
    this.titleEl = h("h3", { text: o.title });
    this.subEl = h("span", { class: "chart-sub", text: o.subtitle || "" });
    const head = h("div", { class: "chart-head" }, h("div", { class: "chart-title" }, this.titleEl, this.subEl), tools);
    this.body = h("div", { class: "chart-body", style: `height:${o.height}px` });
    this.svg = svg("svg", { class: "chart-svg", "font-family": FONT }, this.body);
    // persistent layers: redrawn content below, interaction on top (kept across live redraws)
    this.content = svg("g", {}, this.svg);
    this.hoverG = svg("g", { class: "no-export" }, this.svg);
    this.selRect = svg("rect", { class: "no-export", width: 0, fill: "#2563eb", "fill-opacity": 0.12, stroke: "#2563eb", "stroke-opacity": 0.5, visibility: "hidden" }, this.svg);
    this.overlay = svg("rect", { class: "no-export overlay", fill: "transparent" }, this.svg);
    this.bindOverlay(this.overlay);
    this.tip = h("div", { class: "chart-tip", hidden: true });
    this.msg = h("div", { class: "chart-msg" });
    this.body.append(this.tip, this.msg);
    this.statsEl = h("div", { class: "chart-stats" });
    this.root.replaceChildren(head, this.legend, h("div", { class: "chart-main" }, this.body, this.statsEl));
    this.resetBtn.style.visibility = "hidden";
    this.renderLegend();
  }

  setSeries(defs) {
    this.series = defs;
    this.renderLegend();
    this.invalidate();
  }

  /** data: key → {x: [], mean: [], min?: [], max?: []} */
  setData(data) {
    this.data = data || {};
    this.message = this.points() ? null : this.message === "Loading…" ? "No data yet" : this.message;
    this.invalidate();
  }

  setBands(bands) {
    const key = JSON.stringify(bands || []);
    if (key === this.bandsKey) return;
    this.bandsKey = key;
    this.bands = bands || [];
    this.invalidate();
  }

  setStats(stats) {
    this.stats = stats;
    this.renderStats();
    this.renderLegend();
  }

  setZoom(range) {
    this.zoom = range;
    this.resetBtn.style.visibility = range ? "visible" : "hidden";
    this.root.classList.toggle("zoomed", !!range);
  }

  setMessage(text) {
    this.message = text;
    this.invalidate();
  }

  setSubtitle(text) {
    this.subEl.textContent = text || "";
  }

  toggleLog() {
    this.log = !this.log;
    this.logBtn?.classList.toggle("on", this.log);
    this.render();
  }

  visible() {
    return this.series.filter((s) => !this.hidden.has(s.key) && this.data[s.key]?.x?.length);
  }

  points() {
    let n = 0;
    for (const s of this.series) n = Math.max(n, this.data[s.key]?.x?.length || 0);
    return n;
  }

  renderLegend() {
    const items = this.series.map((s) => {
      const last = this.stats?.[s.key]?.last;
      const b = h("button", {
        class: "legend-item" + (this.hidden.has(s.key) ? " off" : ""), "data-key": s.key,
        title: "Click to show/hide, double-click to show only this one",
      }, h("i", { style: `background:${s.color}` }), h("span", { text: s.label }),
      last != null ? h("b", { text: fmtValue(last) }) : null);
      b.addEventListener("click", () => {
        this.hidden.has(s.key) ? this.hidden.delete(s.key) : this.hidden.add(s.key);
        this.renderLegend();
        this.render();
        this.renderStats();
      });
      b.addEventListener("dblclick", () => {
        this.hidden = new Set(this.series.map((x) => x.key).filter((k) => k !== s.key));
        this.renderLegend();
        this.render();
        this.renderStats();
      });
      return b;
    });
    this.legend.replaceChildren(...items);
  }

  renderStats() {
    if (!this.stats) {
      this.statsEl.replaceChildren();
      return;
    }
    const rows = this.series.filter((s) => this.stats[s.key]);
    if (!rows.length) {
      this.statsEl.replaceChildren();
      return;
    }
    const head = h("tr", {}, ...["", "last", "mean", "min", "max"].map((t) => h("th", { text: t })));
    const body = rows.map((s) => {
      const st = this.stats[s.key];
      return h("tr", { class: this.hidden.has(s.key) ? "off" : null }, h("td", {}, h("i", { style: `background:${s.color}` }), s.label),
        ...["last", "mean", "min", "max"].map((k) => h("td", { text: fmtValue(st[k]) })));
    });
    this.statsEl.replaceChildren(h("table", { class: "stats" }, h("thead", {}, head), h("tbody", {}, ...body)));
  }

  /** Computes scales for the current size and data. */
  layout() {
    const W = Math.max(120, this.body.clientWidth);
    const H = this.o.height;
    const vis = this.visible();
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    const logOk = (v) => v != null && Number.isFinite(v) && (!this.log || v > 0);
    for (const s of vis) {
      const d = this.data[s.key];
      for (let i = 0; i < d.x.length; i++) {
        const x = d.x[i];
        if (this.zoom && (x < this.zoom.from || x > this.zoom.to)) continue;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        for (const arr of [d.mean, d.min, d.max]) {
          const v = arr?.[i];
          if (logOk(v)) { if (v < y0) y0 = v; if (v > y1) y1 = v; }
        }
      }
    }
    if (this.zoom) { x0 = this.zoom.from; x1 = this.zoom.to; }
    if (!Number.isFinite(x0)) { x0 = 0; x1 = 1; }
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    const fixed = this.o.yFixed;
    if (!Number.isFinite(y0)) { y0 = fixed ? fixed[0] : 0; y1 = fixed ? fixed[1] : 1; }
    if (fixed && !this.log) { y0 = Math.min(y0, fixed[0]); y1 = Math.max(y1, fixed[1]); }
    let yt, fmt, toY;
    const top = M.top, bot = H - M.bottom;
    if (this.log) {
      const pad = (Math.log10(y1) - Math.log10(y0)) * 0.05 || 0.5;
      const l0 = Math.log10(y0) - pad, l1 = Math.log10(y1) + pad;
      y0 = 10 ** l0; y1 = 10 ** l1;
      yt = logTicks(y0, y1);
      fmt = (v) => fmtValue(v, 2);
      toY = (v) => bot - ((Math.log10(v) - l0) / (l1 - l0)) * (bot - top);
    } else {
      if (y1 === y0) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
      if (!fixed) { const pad = (y1 - y0) * 0.06; y0 -= pad; y1 += pad; if (y0 < 0 && this.o.nonNegative) y0 = 0; }
      const t = linTicks(y0, y1, Math.max(3, Math.round((bot - top) / 38)));
      if (!fixed) { y0 = Math.min(y0, t.ticks[0] ?? y0); y1 = Math.max(y1, t.ticks[t.ticks.length - 1] ?? y1); }
      yt = t.ticks.filter((v) => v >= y0 - 1e-12 && v <= y1 + 1e-12);
      fmt = axisFormat(t.step, Math.max(Math.abs(y0), Math.abs(y1)));
      const a = y0, b = y1;
      toY = (v) => bot - ((v - a) / (b - a)) * (bot - top);
    }
    const left = M.left, right = W - M.right;
    const toX = (v) => left + ((v - x0) / (x1 - x0)) * (right - left);
    const fromX = (px) => x0 + ((px - left) / (right - left)) * (x1 - x0);
    // The x axis counts steps: whole numbers only (no "1 2 2 3" on a short run).
    const xt = linTicks(x0, x1, Math.max(2, Math.round((right - left) / 90))).ticks
      .filter((v) => Number.isInteger(v));
    return { W, H, vis, x0, x1, y0, y1, yt, xt, fmt, toX, toY, fromX, left, right, top, bot, logOk };
  }

  render() {
    const L = (this.L = this.layout());
    const { W, H, vis, toX, toY, left, right, top, bot } = L;
    this.svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    this.svg.setAttribute("width", W);
    this.svg.setAttribute("height", H);
    const s = this.content;
    s.replaceChildren();
    const clipId = `clip-${this.root.dataset.chart || Math.random().toString(36).slice(2)}`;
    const defs = svg("defs", {}, s);
    svg("rect", { x: left, y: top - 2, width: Math.max(0, right - left), height: bot - top + 4 }, svg("clipPath", { id: clipId }, defs));
    // grid + y axis labels (none while there is nothing to draw)
    const grid = svg("g", { "font-size": 11, fill: "#64748b" }, s);
    const empty = !this.points();
    for (const v of empty ? [] : L.yt) {
      const y = toY(v);
      svg("line", { x1: left, x2: right, y1: y, y2: y, stroke: "#e2e8f0", "stroke-width": 1 }, grid);
      svg("text", { x: left - 8, y: y + 4, "text-anchor": "end" }, grid).textContent = L.fmt(v);
    }
    for (const v of empty ? [] : L.xt) {
      const x = toX(v);
      if (x < left - 1 || x > right + 1) continue;
      svg("line", { x1: x, x2: x, y1: bot, y2: bot + 4, stroke: "#cbd5e1" }, grid);
      svg("text", { x, y: H - 8, "text-anchor": "middle" }, grid).textContent = fmtStep(v);
    }
    if (!empty) svg("line", { x1: left, x2: right, y1: bot, y2: bot, stroke: "#cbd5e1" }, grid);
    const plot = svg("g", { "clip-path": `url(#${clipId})` }, s);
    // shaded x bands (phase transitions)
    for (const b of this.bands) {
      if (b.end < L.x0 || b.start > L.x1) continue;
      const xa = toX(b.start), xb = toX(b.end);
      const w = Math.max(2, xb - xa);
      svg("rect", { x: xa, y: top, width: w, height: bot - top, fill: b.color || "#8b5cf6", "fill-opacity": 0.12 }, plot);
      svg("line", { x1: xa, x2: xa, y1: top, y2: bot, stroke: b.color || "#8b5cf6", "stroke-opacity": 0.45, "stroke-dasharray": "3 3" }, plot);
      if (b.label && w > 8) {
        svg("text", { x: xa + 3, y: top + 11, "font-size": 10, fill: "#6d28d9" }, plot).textContent = b.label;
      }
    }
    // min/max bands then lines
    for (const sr of vis) {
      const d = this.data[sr.key];
      if (!d.min || !d.max) continue;
      for (const seg of this.segments(d, (i) => L.logOk(d.min[i]) && L.logOk(d.max[i]))) {
        let p = "";
        for (const i of seg) p += `${p ? "L" : "M"}${toX(d.x[i]).toFixed(1)},${toY(d.max[i]).toFixed(1)}`;
        for (let k = seg.length - 1; k >= 0; k--) p += `L${toX(d.x[seg[k]]).toFixed(1)},${toY(d.min[seg[k]]).toFixed(1)}`;
        svg("path", { d: p + "Z", fill: sr.color, "fill-opacity": 0.14, stroke: "none" }, plot);
      }
    }
    for (const sr of vis) {
      const d = this.data[sr.key];
      let p = "";
      let single = null;
      for (const seg of this.segments(d, (i) => L.logOk(d.mean[i]))) {
        seg.forEach((i, k) => { p += `${k ? "L" : "M"}${toX(d.x[i]).toFixed(1)},${toY(d.mean[i]).toFixed(1)}`; });
        if (seg.length === 1) single = seg[0];
      }
      svg("path", { d: p || "M0,0", fill: "none", stroke: sr.color, "stroke-width": sr.width || 1.6,
        "stroke-linejoin": "round", "stroke-linecap": "round", "stroke-dasharray": sr.dash || null }, plot);
      if (single != null) svg("circle", { cx: toX(d.x[single]), cy: toY(d.mean[single]), r: 2.5, fill: sr.color }, plot);
    }
    // interaction layer
    for (const [k, v] of Object.entries({ x: left, y: top, width: Math.max(0, right - left), height: bot - top })) this.overlay.setAttribute(k, v);
    this.selRect.setAttribute("y", top);
    this.selRect.setAttribute("height", bot - top);
    if (this.drag) this.drawSelection();
    const n = this.points();
    this.root.setAttribute("data-points", String(n));
    // when the chart first drew points (read by the scale benchmark)
    if (n > 0 && !this.root.dataset.drawnAt) this.root.dataset.drawnAt = performance.now().toFixed(0);
    this.msg.textContent = this.message || "";
    this.msg.hidden = !this.message;
    if (this.hoverX != null) this.showHover(this.hoverX, this.tipShown);
  }

  /** Splits the indices of d.x into runs where ok(i) holds (gaps at missing values), within the zoom. */
  segments(d, ok) {
    const out = [];
    let cur = [];
    const z = this.zoom;
    for (let i = 0; i < d.x.length; i++) {
      if (z && (d.x[i] < z.from || d.x[i] > z.to)) continue;
      if (ok(i)) cur.push(i);
      else if (cur.length) { out.push(cur); cur = []; }
    }
    if (cur.length) out.push(cur);
    return out;
  }

  /** Drag state is kept in data coordinates, so a live redraw during a drag keeps the selection. */
  drawSelection() {
    const L = this.L, d = this.drag;
    const a = Math.min(L.toX(d.x0), L.toX(d.x1)), b = Math.max(L.toX(d.x0), L.toX(d.x1));
    const x = Math.max(L.left, a), w = Math.max(0, Math.min(L.right, b) - x);
    this.selRect.setAttribute("x", x);
    this.selRect.setAttribute("width", w);
    this.selRect.setAttribute("visibility", w > 2 ? "visible" : "hidden");
  }

  bindOverlay(ov) {
    const dataX = (e) => {
      const r = this.svg.getBoundingClientRect();
      return this.L.fromX(Math.min(this.L.right, Math.max(this.L.left, e.clientX - r.left)));
    };
    ov.addEventListener("pointerdown", (e) => {
      if (e.button !== 0 || !this.L) return;
      const x = dataX(e);
      this.drag = { x0: x, x1: x };
      ov.setPointerCapture(e.pointerId);
    });
    ov.addEventListener("pointermove", (e) => {
      if (!this.L) return;
      const x = dataX(e);
      if (this.drag) { this.drag.x1 = x; this.drawSelection(); }
      this.hover(x, true);
    });
    ov.addEventListener("pointerup", () => {
      const d = this.drag;
      if (!d) return;
      this.drag = null;
      this.selRect.setAttribute("visibility", "hidden");
      const L = this.L;
      const px = Math.abs(L.toX(d.x1) - L.toX(d.x0));
      if (px > 6 && this.points() > 1) {
        const from = Math.floor(Math.min(d.x0, d.x1)), to = Math.ceil(Math.max(d.x0, d.x1));
        if (to > from) this.o.onZoom?.({ from: Math.max(0, from), to });
      }
    });
    ov.addEventListener("pointercancel", () => { this.drag = null; this.selRect.setAttribute("visibility", "hidden"); });
    ov.addEventListener("pointerleave", () => { if (!this.drag) this.hover(null); });
    ov.addEventListener("dblclick", () => this.o.onZoom?.(null));
  }

  /** Hover at data x (null: leave); synced to the other charts of the group without tooltip. */
  hover(x, tip) {
    this.showHover(x, tip);
    if (this.o.group) for (const c of groups.get(this.o.group)) if (c !== this && c.root.isConnected) c.showHover(x, false);
  }

  showHover(x, tip) {
    this.hoverX = x;
    this.tipShown = tip;
    const g = this.hoverG;
    if (!g) return;
    g.replaceChildren();
    const L = this.L;
    const vis = L.vis;
    if (x == null || !vis.length) {
      this.tip.hidden = true;
      return;
    }
    // snap to the nearest x of the first visible series
    const d0 = this.data[vis[0].key];
    const i0 = nearest(d0.x, x);
    if (i0 < 0) return;
    const sx = d0.x[i0];
    if (sx < L.x0 || sx > L.x1) { this.tip.hidden = true; return; }
    const X = L.toX(sx);
    svg("line", { x1: X, x2: X, y1: L.top, y2: L.bot, stroke: "#334155", "stroke-opacity": 0.55, "stroke-dasharray": "4 3" }, g);
    const rows = [];
    for (const s of vis) {
      const d = this.data[s.key];
      const i = d.x === d0.x ? i0 : nearest(d.x, sx);
      const v = d.mean[i];
      if (L.logOk(v)) svg("circle", { cx: L.toX(d.x[i]), cy: L.toY(v), r: 3.5, fill: "#fff", stroke: s.color, "stroke-width": 2 }, g);
      const range = d.min && d.max && d.min[i] != null && d.max[i] != null && d.min[i] !== d.max[i] ? ` (${fmtValue(d.min[i], 3)} – ${fmtValue(d.max[i], 3)})` : "";
      rows.push(h("div", { class: "tip-row" }, h("i", { style: `background:${s.color}` }), h("span", { text: s.label }),
        h("b", { text: fmtValue(v) + (this.o.unit && v != null ? ` ${this.o.unit}` : "") }),
        range ? h("small", { text: range }) : null,
        d.x !== d0.x && d.x[i] !== sx ? h("small", { text: ` @${fmtStep(d.x[i])}` }) : null));
    }
    if (!tip) { this.tip.hidden = true; return; }
    const band = this.bands.find((b) => sx >= b.start && sx <= b.end);
    const t = this.o.timeOf?.(sx);
    this.tip.replaceChildren(h("div", { class: "tip-head" }, h("b", { text: `Step ${sx.toLocaleString("en-US")}` }), t ? h("span", { text: t }) : null),
      ...rows, ...(band ? [h("div", { class: "tip-band", text: band.title || "phase transition" })] : []));
    this.tip.hidden = false;
    const bw = this.body.clientWidth;
    const tw = this.tip.offsetWidth;
    this.tip.style.left = `${X + 14 + tw > bw ? X - 14 - tw : X + 14}px`;
    this.tip.style.top = `${L.top + 4}px`;
  }

  // ---- export -------------------------------------------------------------------------------
  baseName() {
    return (this.o.filename?.() || this.o.title || "chart").replace(/[^\w.-]+/g, "_");
  }

  exportCsv(e) {
    const c = this.o.csv?.();
    if (!c) { e.preventDefault(); return; }
    this.csvLink.href = c.href;
    this.csvLink.download = c.filename || `${this.baseName()}.csv`;
    if (c.href.startsWith("blob:")) setTimeout(() => URL.revokeObjectURL(c.href), 10000);
    // the browser follows the link with its now-current href (a real <a download> download)
  }

  /** A CSV (blob URL) of what is drawn, in long form: series,step,mean,min,max. */
  dataCsv(filename) {
    const q = (k) => (/[",\n]/.test(k) ? `"${k.replace(/"/g, '""')}"` : k);
    const lines = ["series,step,mean,min,max"];
    for (const s of this.series) {
      const d = this.data[s.key];
      for (let i = 0; d && i < d.x.length; i++) lines.push([q(s.key), d.x[i], d.mean[i] ?? "", d.min?.[i] ?? "", d.max?.[i] ?? ""].join(","));
    }
    if (lines.length < 2) return null;
    return { href: URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" })), filename };
  }

  /** Updates the CSV link's href ahead of time so it can be inspected or copied. */
  refreshCsvHref() {
    const c = this.o.csv?.();
    if (c && !c.href.startsWith("blob:")) {
      this.csvLink.href = c.href;
      this.csvLink.download = c.filename || `${this.baseName()}.csv`;
    }
  }

  svgString() {
    const L = this.L || this.layout();
    const head = 44;
    const clone = this.svg.cloneNode(true);
    clone.querySelectorAll(".no-export").forEach((n) => n.remove());
    const out = svg("svg", { xmlns: NS, width: L.W, height: L.H + head, viewBox: `0 0 ${L.W} ${L.H + head}`, "font-family": FONT });
    svg("rect", { width: L.W, height: L.H + head, fill: "#ffffff" }, out);
    const title = svg("text", { x: M.left, y: 18, "font-size": 14, "font-weight": 600, fill: "#0f172a" }, out);
    title.textContent = `${this.o.title}${this.subEl.textContent ? ` — ${this.subEl.textContent}` : ""}`;
    let lx = M.left;
    for (const s of this.visible()) {
      svg("rect", { x: lx, y: 27, width: 10, height: 10, rx: 2, fill: s.color }, out);
      const t = svg("text", { x: lx + 14, y: 36, "font-size": 11, fill: "#334155" }, out);
      t.textContent = s.label;
      lx += 22 + s.label.length * 6.5;
    }
    const g = svg("g", { transform: `translate(0,${head})` }, out);
    for (const n of [...clone.childNodes]) g.appendChild(n);
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + new XMLSerializer().serializeToString(out);
  }

  exportSvg() {
    const url = URL.createObjectURL(new Blob([this.svgString()], { type: "image/svg+xml" }));
    download(url, `${this.baseName()}.svg`);
    setTimeout(() => URL.revokeObjectURL(url), 5000);
  }

  exportPng() {
    const text = this.svgString();
    const img = new Image();
    const url = URL.createObjectURL(new Blob([text], { type: "image/svg+xml" }));
    img.onload = () => {
      const scale = 2;
      const c = document.createElement("canvas");
      c.width = img.width * scale;
      c.height = img.height * scale;
      const ctx = c.getContext("2d");
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, c.width, c.height);
      ctx.scale(scale, scale);
      ctx.drawImage(img, 0, 0);
      URL.revokeObjectURL(url);
      c.toBlob((blob) => {
        const u = URL.createObjectURL(blob);
        download(u, `${this.baseName()}.png`);
        setTimeout(() => URL.revokeObjectURL(u), 5000);
      }, "image/png");
    };
    img.src = url;
  }
}
