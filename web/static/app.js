// mmaker dashboard: live heatmap and GEX views over SSE, header numbers from /healthz. No build step.
// When the server requires a token (MMAKER_WEB_TOKEN) the dashboard asks for it once per tab, keeps it in
// sessionStorage and sends it only in the Authorization header (never in a URL). Streams are read with
// fetch() — EventSource cannot send headers — and reconnect like EventSource, with Last-Event-ID.
"use strict";

const MODELS = ["heatmap", "gex"];
const HEALTH_POLL_MS = 3000;
const state = { underlying: null, sources: {}, views: {}, health: null };

const $ = (id) => document.getElementById(id);

// ---------- formatting ----------
function fmtBig(x) {
  if (x === null || x === undefined || !isFinite(x)) return "—";
  const a = Math.abs(x);
  if (a >= 1e9) return (x / 1e9).toFixed(2) + "B";
  if (a >= 1e6) return (x / 1e6).toFixed(2) + "M";
  if (a >= 1e3) return (x / 1e3).toFixed(1) + "k";
  return x.toFixed(a >= 10 ? 0 : 2);
}
const fmtNum = (x, d = 2) => (x === null || x === undefined || !isFinite(x) ? "—" : Number(x).toFixed(d));
function fmtAge(ms) {
  if (ms === null || !isFinite(ms)) return "—";
  const s = Math.max(0, ms / 1000);
  return s < 60 ? s.toFixed(1) + " s" : (s / 60).toFixed(1) + " min";
}

// ---------- canvas helpers ----------
function setupCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, w, h };
}
function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

// Diverging scale symmetric around 0: blue (sells, < 0) — neutral — red (buys, > 0).
const NEG = [49, 110, 196], MID = [38, 43, 54], POS = [214, 62, 55];
function divergingColor(t) {
  const k = Math.min(1, Math.sqrt(Math.abs(t)));
  const end = t < 0 ? NEG : POS;
  const c = MID.map((m, i) => Math.round(m + (end[i] - m) * k));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// ---------- heatmap ----------
const heat = { layout: null };

function renderHeatmap(view) {
  const el = $("heatmap"), canvas = $("heatmap-canvas");
  const { ctx, w, h } = setupCanvas(canvas);
  const expiries = view.expiries || [], buckets = view.buckets || [], tiles = view.tiles || [];
  el.dataset.version = view.version;
  el.dataset.tiles = tiles.length;
  el.dataset.expiries = expiries.length;
  el.dataset.buckets = buckets.length;
  if (!expiries.length || !buckets.length) {
    ctx.fillStyle = css("--muted"); ctx.fillText("no tiles yet", 10, 20); heat.layout = null; return;
  }
  const left = 62, top = 8, right = 8, bottom = 46;
  const pw = w - left - right, ph = h - top - bottom;
  const cw = pw / expiries.length, chh = ph / buckets.length;
  const col = new Map(expiries.map((e, i) => [e, i]));
  const row = new Map(buckets.map((b, i) => [Number(b), i]));
  let maxAbs = 0;
  for (const t of tiles) maxAbs = Math.max(maxAbs, Math.abs(t.net_flow || 0));
  ctx.fillStyle = `rgb(${MID.join(",")})`;
  ctx.fillRect(left, top, pw, ph);
  const cells = new Map();
  for (const t of tiles) {
    const i = col.get(t.expiry), j = row.get(Number(t.bucket));
    if (i === undefined || j === undefined) continue;
    cells.set(i + ":" + j, t);
    ctx.fillStyle = divergingColor(maxAbs ? (t.net_flow || 0) / maxAbs : 0);
    // highest strikes at the top
    ctx.fillRect(left + i * cw, top + (buckets.length - 1 - j) * chh, Math.ceil(cw), Math.ceil(chh));
  }
  // axes
  ctx.fillStyle = css("--muted");
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  const yStep = Math.max(1, Math.ceil(14 / chh));
  for (let j = 0; j < buckets.length; j += yStep) {
    ctx.fillText(String(buckets[j]), left - 6, top + (buckets.length - 1 - j + 0.5) * chh);
  }
  ctx.save();
  ctx.textAlign = "right"; ctx.textBaseline = "middle";
  const xStep = Math.max(1, Math.ceil(14 / cw));
  for (let i = 0; i < expiries.length; i += xStep) {
    ctx.save();
    ctx.translate(left + (i + 0.5) * cw, top + ph + 6);
    ctx.rotate(-Math.PI / 4);
    ctx.fillText(String(expiries[i]).slice(5), 0, 0);
    ctx.restore();
  }
  ctx.restore();
  // spot line
  const width = Number(view.bucket_width) || (buckets.length > 1 ? buckets[1] - buckets[0] : 1);
  if (isFinite(view.spot)) {
    const pos = (view.spot - Number(buckets[0])) / width; // in rows from the bottom edge of row 0
    const y = top + ph - pos * chh;
    if (y >= top && y <= top + ph) {
      ctx.strokeStyle = css("--spot"); ctx.lineWidth = 1.5; ctx.setLineDash([6, 4]);
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + pw, y); ctx.stroke(); ctx.setLineDash([]);
      ctx.fillStyle = css("--spot"); ctx.textAlign = "left"; ctx.textBaseline = "bottom";
      ctx.fillText("spot " + fmtNum(view.spot), left + 4, y - 2);
    }
    el.dataset.spotLine = String(Math.round(y));
  }
  heat.layout = { left, top, pw, ph, cw, chh, expiries, buckets, cells, width };
  $("heatmap-min").textContent = "−" + fmtBig(maxAbs);
  $("heatmap-max").textContent = "+" + fmtBig(maxAbs);
  drawLegend();
}

function drawLegend() {
  const c = $("heatmap-legend"), ctx = c.getContext("2d");
  for (let x = 0; x < c.width; x++) {
    ctx.fillStyle = divergingColor((x / (c.width - 1)) * 2 - 1);
    ctx.fillRect(x, 0, 1, c.height);
  }
}

function heatmapHover(ev) {
  const tip = $("heatmap-tip"), L = heat.layout;
  if (!L) { tip.hidden = true; return; }
  const r = ev.target.getBoundingClientRect();
  const x = ev.clientX - r.left, y = ev.clientY - r.top;
  const i = Math.floor((x - L.left) / L.cw), jFromTop = Math.floor((y - L.top) / L.chh);
  const j = L.buckets.length - 1 - jFromTop;
  if (i < 0 || i >= L.expiries.length || j < 0 || j >= L.buckets.length) { tip.hidden = true; return; }
  const t = L.cells.get(i + ":" + j);
  const lo = Number(L.buckets[j]);
  let text = `${L.expiries[i]}  strikes ${lo}–${lo + L.width}`;
  if (t) {
    text += `\nnet flow     ${fmtBig(t.net_flow)}\nbuy premium  ${fmtBig(t.buy_premium)}` +
      `\nsell premium ${fmtBig(t.sell_premium)}\ncall flow    ${fmtBig(t.call_flow)}` +
      `\nput flow     ${fmtBig(t.put_flow)}\nvolume       ${t.volume}\ntrades       ${t.trades}`;
  } else text += "\nno trades";
  tip.textContent = text;
  tip.hidden = false;
  tip.style.left = Math.min(x + 14, r.width - tip.offsetWidth - 4) + "px";
  tip.style.top = y + 14 + "px";
}

// ---------- GEX ----------
const gexState = { layout: null };

function xScale(lo, hi, x0, x1) { return (v) => x0 + ((v - lo) / (hi - lo || 1)) * (x1 - x0); }

function marker(ctx, x, top, bottom, color, label, dash) {
  ctx.strokeStyle = color; ctx.lineWidth = 1.5; ctx.setLineDash(dash || []);
  ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, bottom); ctx.stroke(); ctx.setLineDash([]);
  ctx.fillStyle = color; ctx.textAlign = "left"; ctx.textBaseline = "top";
  ctx.fillText(label, x + 3, top);
}

function renderGex(view) {
  const el = $("gex");
  const rows = (view.by_strike || []).slice().sort((a, b) => a.strike - b.strike);
  el.dataset.version = view.version;
  el.dataset.bars = rows.length;
  $("gex-unit").textContent = [view.unit, view.sign_convention].filter(Boolean).join(" · ");
  $("gex-net").textContent = fmtBig(view.net_gex);
  $("gex-zero").textContent = fmtNum(view.zero_gamma);
  $("gex-call-wall").textContent = fmtNum(view.call_wall);
  $("gex-put-wall").textContent = fmtNum(view.put_wall);
  $("gex-0dte").textContent = view.zero_dte ? fmtBig(view.zero_dte.net_gex) : "—";
  renderGexBars(view, rows);
  renderProfile(view);
}

function renderGexBars(view, rows) {
  const { ctx, w, h } = setupCanvas($("gex-bars"));
  if (!rows.length) { ctx.fillStyle = css("--muted"); ctx.fillText("no strikes yet", 10, 20); return; }
  const left = 56, right = 8, top = 14, bottom = 22;
  const lo = rows[0].strike, hi = rows[rows.length - 1].strike;
  const step = rows.length > 1 ? (hi - lo) / (rows.length - 1) : 1;
  const X = xScale(lo - step / 2, hi + step / 2, left, w - right);
  let maxAbs = 0;
  for (const r of rows) maxAbs = Math.max(maxAbs, Math.abs(r.call_gex || 0), Math.abs(r.put_gex || 0), Math.abs(r.net_gex || 0));
  maxAbs = maxAbs || 1;
  const Y = (v) => top + (h - top - bottom) / 2 - (v / maxAbs) * ((h - top - bottom) / 2);
  const bw = Math.max(1, ((w - left - right) / rows.length) * 0.8);
  ctx.strokeStyle = css("--line"); ctx.beginPath(); ctx.moveTo(left, Y(0)); ctx.lineTo(w - right, Y(0)); ctx.stroke();
  for (const r of rows) {
    const x = X(r.strike) - bw / 2;
    ctx.fillStyle = css("--call"); ctx.fillRect(x, Math.min(Y(r.call_gex), Y(0)), bw, Math.abs(Y(r.call_gex) - Y(0)));
    ctx.fillStyle = css("--put"); ctx.fillRect(x, Math.min(Y(r.put_gex), Y(0)), bw, Math.abs(Y(r.put_gex) - Y(0)));
  }
  ctx.strokeStyle = css("--net"); ctx.lineWidth = 1.5; ctx.beginPath();
  rows.forEach((r, k) => (k ? ctx.lineTo(X(r.strike), Y(r.net_gex)) : ctx.moveTo(X(r.strike), Y(r.net_gex))));
  ctx.stroke();
  ctx.fillStyle = css("--muted"); ctx.textAlign = "right"; ctx.textBaseline = "middle";
  ctx.fillText(fmtBig(maxAbs), left - 4, Y(maxAbs)); ctx.fillText("0", left - 4, Y(0)); ctx.fillText(fmtBig(-maxAbs), left - 4, Y(-maxAbs));
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  const labelEvery = Math.max(1, Math.ceil(rows.length / ((w - left) / 48)));
  rows.forEach((r, k) => { if (k % labelEvery === 0) ctx.fillText(String(r.strike), X(r.strike), h - bottom + 6); });
  const inRange = (v) => v !== null && v !== undefined && isFinite(v) && v >= lo - step && v <= hi + step;
  if (inRange(view.put_wall)) marker(ctx, X(view.put_wall), top, h - bottom, css("--put"), "put wall " + view.put_wall, [2, 3]);
  if (inRange(view.call_wall)) marker(ctx, X(view.call_wall), top, h - bottom, css("--call"), "call wall " + view.call_wall, [2, 3]);
  if (inRange(view.zero_gamma)) marker(ctx, X(view.zero_gamma), top + 12, h - bottom, css("--zero"), "zero γ", [5, 4]);
  if (inRange(view.spot)) marker(ctx, X(view.spot), top + 24, h - bottom, css("--spot"), "spot " + fmtNum(view.spot));
  gexState.layout = { rows, X, step };
}

function gexHover(ev) {
  const tip = $("gex-tip"), L = gexState.layout;
  if (!L) { tip.hidden = true; return; }
  const r = ev.target.getBoundingClientRect();
  const x = ev.clientX - r.left, y = ev.clientY - r.top;
  let best = null, dist = Infinity;
  for (const row of L.rows) { const d = Math.abs(L.X(row.strike) - x); if (d < dist) { dist = d; best = row; } }
  if (!best || dist > 20) { tip.hidden = true; return; }
  tip.textContent = `strike ${best.strike}\ncall GEX ${fmtBig(best.call_gex)}\nput GEX  ${fmtBig(best.put_gex)}` +
    `\nnet GEX  ${fmtBig(best.net_gex)}\nvanna    ${fmtBig(best.vanna)}\ncharm    ${fmtBig(best.charm)}`;
  tip.hidden = false;
  tip.style.left = Math.min(x + 14, r.width - tip.offsetWidth - 4) + "px";
  tip.style.top = y + 14 + "px";
}

function renderProfile(view) {
  const el = $("gex");
  const { ctx, w, h } = setupCanvas($("gex-profile"));
  const p = view.profile || {}, xs = p.spot || [], ys = p.net_gex || [];
  el.dataset.profile = xs.length;
  if (xs.length < 2) { ctx.fillStyle = css("--muted"); ctx.fillText("no profile yet", 10, 20); return; }
  const left = 56, right = 8, top = 14, bottom = 20;
  const X = xScale(xs[0], xs[xs.length - 1], left, w - right);
  const lo = Math.min(0, ...ys), hi = Math.max(0, ...ys);
  const Y = (v) => top + (1 - (v - lo) / (hi - lo || 1)) * (h - top - bottom);
  ctx.fillStyle = "rgba(155,227,122,0.08)";
  ctx.fillRect(left, top, w - left - right, Y(0) - top);
  ctx.fillStyle = "rgba(255,122,110,0.08)";
  ctx.fillRect(left, Y(0), w - left - right, h - bottom - Y(0));
  ctx.strokeStyle = css("--line"); ctx.beginPath(); ctx.moveTo(left, Y(0)); ctx.lineTo(w - right, Y(0)); ctx.stroke();
  ctx.strokeStyle = css("--net"); ctx.lineWidth = 2; ctx.beginPath();
  xs.forEach((x, k) => (k ? ctx.lineTo(X(x), Y(ys[k])) : ctx.moveTo(X(x), Y(ys[k]))));
  ctx.stroke();
  ctx.fillStyle = css("--muted"); ctx.textAlign = "right"; ctx.textBaseline = "middle";
  ctx.fillText(fmtBig(hi), left - 4, Y(hi)); ctx.fillText("0", left - 4, Y(0)); ctx.fillText(fmtBig(lo), left - 4, Y(lo));
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  [0, 0.25, 0.5, 0.75, 1].forEach((f) => { const v = xs[0] + f * (xs[xs.length - 1] - xs[0]); ctx.fillText(v.toFixed(0), X(v), h - bottom + 4); });
  const crossings = view.zero_gamma_crossings || (view.zero_gamma !== null && view.zero_gamma !== undefined ? [view.zero_gamma] : []);
  for (const z of crossings) {
    if (z >= xs[0] && z <= xs[xs.length - 1]) {
      ctx.fillStyle = css("--zero"); ctx.beginPath(); ctx.arc(X(z), Y(0), 4, 0, 2 * Math.PI); ctx.fill();
    }
  }
  if (isFinite(view.zero_gamma) && view.zero_gamma >= xs[0] && view.zero_gamma <= xs[xs.length - 1]) {
    marker(ctx, X(view.zero_gamma), top, h - bottom, css("--zero"), "zero γ " + fmtNum(view.zero_gamma), [5, 4]);
  }
  if (isFinite(view.spot)) marker(ctx, X(view.spot), top + 12, h - bottom, css("--spot"), "spot");
}

// ---------- header ----------
function renderHeaderFromViews() {
  const parts = [], versions = {};
  let newestAsOf = null, epoch = null, spot = null;
  for (const m of MODELS) {
    const v = state.views[m];
    if (!v) continue;
    versions[m] = v.version;
    parts.push(`${m} v${v.version}`);
    if (newestAsOf === null || v.as_of_ms < newestAsOf) newestAsOf = v.as_of_ms; // the oldest one matters
    epoch = v.epoch || epoch;
    spot = isFinite(v.spot) ? v.spot : spot;
  }
  const hv = $("hdr-version");
  hv.textContent = parts.join(" · ") || "—";
  hv.dataset.heatmap = versions.heatmap ?? "";
  hv.dataset.gex = versions.gex ?? "";
  hv.dataset.updates = String((Number(hv.dataset.updates) || 0) + 1);
  if (epoch) $("hdr-epoch").textContent = epoch;
  if (spot !== null) $("hdr-spot").textContent = fmtNum(spot);
  state.oldestAsOf = newestAsOf;
  tickAge();
}

function tickAge() {
  const el = $("hdr-age");
  if (state.oldestAsOf === null || state.oldestAsOf === undefined) { el.textContent = "—"; return; }
  const age = Date.now() - state.oldestAsOf;
  el.textContent = fmtAge(age);
  el.classList.toggle("bad", state.health && age / 1000 > state.health.stale_view_s);
}

function renderHealth(body) {
  state.health = body;
  const hh = $("hdr-health");
  hh.textContent = body.status || "—";
  hh.title = (body.problems || []).join("\n");
  hh.className = "v " + (body.status === "ok" ? "good" : "bad");
  const ing = body.ingest;
  $("hdr-ingest").textContent = ing
    ? `${fmtBig(ing.events_per_s)}/s · lag p50 ${fmtNum(ing.lag_ms_p50, 0)} ms p99 ${fmtNum(ing.lag_ms_p99, 0)} ms`
    : "no status";
  $("hdr-ingest").className = "v " + (ing && ing.connected ? "" : "bad");
  const u = (body.underlyings || {})[state.underlying];
  if (u) {
    const c = u.chain || {};
    $("hdr-chain").textContent = `${fmtNum(c.latency_ms_last, 0)} ms (ewma ${fmtNum(c.latency_ms_ewma, 0)}) every ${fmtNum(c.interval_s, 1)} s`;
    if (u.epoch && !state.views.heatmap && !state.views.gex) $("hdr-epoch").textContent = u.epoch;
  }
}

async function pollHealth() {
  try {
    const resp = await fetch("/healthz", { cache: "no-store" });
    renderHealth(await resp.json());
  } catch (e) {
    $("hdr-health").textContent = "unreachable"; $("hdr-health").className = "v bad";
  }
}

// ---------- access token ----------
const TOKEN_KEY = "mmaker.token";
let tokenWaiters = [];

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  return headers;
}

// A request sent with token `used` got 401: show the token form (the refused token is forgotten) and resolve
// once a token was entered. When another token was entered since that request, resolve at once (try it).
function askForToken(used) {
  if (token() !== used) return Promise.resolve();
  const form = $("token-form");
  if (form.hidden) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token-error").textContent = used ? "that token was refused" : "this server needs an access token";
    form.hidden = false;
    $("token-input").focus();
  }
  setStreamStatus();
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

function submitToken(ev) {
  ev.preventDefault();
  const input = $("token-input"), value = input.value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  input.value = "";
  $("token-form").hidden = true;
  const waiters = tokenWaiters;
  tokenWaiters = [];
  waiters.forEach((resolve) => resolve());
}

// GET with the token; a 401 asks for the token and tries again.
async function apiGet(path) {
  for (;;) {
    const used = token();
    const resp = await fetch(path, { cache: "no-store", headers: authHeaders() });
    if (resp.status !== 401) return resp;
    await askForToken(used);
  }
}

// ---------- streams ----------
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// An EventSource that sends headers: fetch() + a ReadableStream parsed as text/event-stream. Reconnects after
// `retryMs` (the server may change it with "retry:"), sending the last event id as Last-Event-ID.
class SseStream {
  constructor(url, onEvent, onState) {
    this.url = url;
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastEventId = "";
    this.retryMs = 1000;
    this.state = "connecting";
    this.closed = false;
    this.controller = null;
    this.run();
  }

  setState(value) { this.state = value; this.onState(); }

  async run() {
    while (!this.closed) {
      this.controller = new AbortController();
      const used = token();
      const headers = authHeaders({ Accept: "text/event-stream" });
      if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
      let resp = null;
      try {
        resp = await fetch(this.url, { headers, cache: "no-store", signal: this.controller.signal });
      } catch (e) { /* network error: retry below */ }
      if (this.closed) return;
      if (resp && resp.status === 401) {
        this.setState("unauthorized");
        await askForToken(used);
        continue;
      }
      if (resp && resp.ok && resp.body) {
        this.setState("open");
        try { await this.read(resp.body.getReader()); } catch (e) { /* dropped */ }
      }
      if (this.closed) return;
      this.setState("connecting");
      await sleep(this.retryMs);
    }
  }

  async read(reader) {
    const decoder = new TextDecoder();
    let buf = "", data = [], type = "", id = this.lastEventId;
    for (;;) {
      const { value, done } = await reader.read();
      if (done || this.closed) return;
      buf += decoder.decode(value, { stream: true });
      for (;;) {
        const m = /\r\n|\r|\n/.exec(buf);
        if (m === null || (m[0] === "\r" && m.index === buf.length - 1)) break; // "\r" may be half of "\r\n"
        const line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (line === "") { // dispatch
          this.lastEventId = id;
          if (data.length) this.onEvent(type || "message", data.join("\n"), id);
          data = []; type = "";
          continue;
        }
        if (line[0] === ":") continue; // comment (keepalive)
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val[0] === " ") val = val.slice(1);
        if (field === "data") data.push(val);
        else if (field === "event") type = val;
        else if (field === "id" && !val.includes("\0")) id = val;
        else if (field === "retry" && /^\d+$/.test(val)) this.retryMs = Number(val);
      }
    }
  }

  close() {
    this.closed = true;
    if (this.controller) this.controller.abort();
  }
}

function setStreamStatus() {
  const open = MODELS.filter((m) => state.sources[m] && state.sources[m].state === "open").length;
  const el = $("hdr-stream");
  const needToken = !$("token-form").hidden;
  el.textContent = needToken ? "token needed" : open === MODELS.length ? "live" : open ? "partial" : "reconnecting";
  el.className = "v " + (open === MODELS.length && !needToken ? "good" : "bad");
}

function openStreams(underlying) {
  for (const m of MODELS) if (state.sources[m]) state.sources[m].close();
  state.views = {};
  state.underlying = underlying;
  for (const m of MODELS) {
    const onEvent = (type, data) => {
      if (type !== "model" || state.underlying !== underlying) return;
      const view = JSON.parse(data);
      state.views[m] = view;
      (m === "heatmap" ? renderHeatmap : renderGex)(view);
      renderHeaderFromViews();
    };
    state.sources[m] = new SseStream(`/stream/${m}/${encodeURIComponent(underlying)}`, onEvent, setStreamStatus);
  }
  setStreamStatus();
}

async function init() {
  $("token-form").addEventListener("submit", submitToken);
  let underlyings = [];
  try {
    const resp = await apiGet("/api/models");
    if (resp.ok) underlyings = (await resp.json()).underlyings || [];
  } catch (e) { /* fall back below */ }
  if (!underlyings.length) underlyings = ["SPY"];
  const wanted = new URLSearchParams(location.search).get("u") || localStorage.getItem("mmaker.underlying");
  const chosen = underlyings.includes((wanted || "").toUpperCase()) ? wanted.toUpperCase() : underlyings[0];
  const sel = $("underlying");
  for (const u of underlyings) sel.add(new Option(u, u, false, u === chosen));
  sel.addEventListener("change", () => {
    localStorage.setItem("mmaker.underlying", sel.value);
    openStreams(sel.value);
    pollHealth();
  });
  $("heatmap-canvas").addEventListener("mousemove", heatmapHover);
  $("heatmap-canvas").addEventListener("mouseleave", () => ($("heatmap-tip").hidden = true));
  $("gex-bars").addEventListener("mousemove", gexHover);
  $("gex-bars").addEventListener("mouseleave", () => ($("gex-tip").hidden = true));
  window.addEventListener("resize", () => {
    if (state.views.heatmap) renderHeatmap(state.views.heatmap);
    if (state.views.gex) renderGex(state.views.gex);
  });
  openStreams(chosen);
  pollHealth();
  setInterval(pollHealth, HEALTH_POLL_MS);
  setInterval(tickAge, 500);
}

document.addEventListener("DOMContentLoaded", init);
