// certhub dashboard: vanilla JS, no build step, no CDN. Polls /dashboard/api every few
// seconds; the token (if the server asks for one) lives in sessionStorage.
"use strict";

const API = "/dashboard/api";
const REFRESH_MS = 3000;
const STATES = ["healthy", "renewal-due", "overdue", "expired", "revoked", "disabled",
  "no-certificate"];
const LABELS = { "healthy": "healthy", "renewal-due": "renewal due", "overdue": "overdue",
  "expired": "expired", "revoked": "revoked", "disabled": "disabled",
  "no-certificate": "no certificate" };
const SVGNS = "http://www.w3.org/2000/svg";

const state = { token: sessionStorage.getItem("certhub.dashboard.token") || "",
  loginRequired: true, detailId: null, search: "", timer: null, development: false,
  seq: 0 };

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue("--" + name).trim();
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({ "Accept": "application/json" }, options.headers || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const response = await fetch(API + path, Object.assign({}, options, { headers }));
  if (response.status === 401) throw new Unauthorized("token required");
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    if (response.status === 400) throw new Error(detail);
    throw new Error(response.status + " " + detail);
  }
  return response.json();
}

// -- formatting ------------------------------------------------------------------------

function span(seconds) {
  const s = Math.abs(seconds);
  const sign = seconds < 0 ? "-" : "";
  if (s < 120) return sign + Math.round(s) + " s";
  if (s < 7200) return sign + Math.round(s / 60) + " min";
  if (s < 172800) return sign + Math.round(s / 3600) + " h";
  return sign + Math.round(s / 86400) + " d";
}

function until(iso) {
  if (!iso) return "—";
  return span((Date.parse(iso) - Date.now()) / 1000);
}

function short(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$|Z$/, "Z") : "—";
}

function badge(lifecycle) {
  return el("span", { class: "badge " + lifecycle }, LABELS[lifecycle] || lifecycle);
}

// -- overview --------------------------------------------------------------------------

function renderTiles(counts, total) {
  const tiles = $("#tiles");
  tiles.replaceChildren();
  for (const s of STATES) {
    const tile = el("div", { class: "tile", id: "tile-" + s },
      el("span", { class: "n", id: "count-" + s, "data-count": counts[s] || 0 }, counts[s] || 0),
      el("span", { class: "l" }, LABELS[s]));
    tile.style.borderLeftColor = cssVar(s);
    tiles.append(tile);
  }
  $("#total").textContent = total + " devices";
}

function renderDonut(counts, total, connected) {
  const donut = $("#donut");
  donut.replaceChildren();
  const r = 46, c = 2 * Math.PI * r;
  let offset = 0;
  donut.append(svg("circle", { cx: 60, cy: 60, r, fill: "none", stroke: "#eceff3",
    "stroke-width": 18 }));
  for (const s of STATES) {
    const n = counts[s] || 0;
    if (!n || !total) continue;
    const len = (n / total) * c;
    const arc = svg("circle", { cx: 60, cy: 60, r, fill: "none", stroke: cssVar(s),
      "stroke-width": 18, "stroke-dasharray": len + " " + (c - len),
      "stroke-dashoffset": -offset, transform: "rotate(-90 60 60)" });
    arc.append(Object.assign(svg("title"), { textContent: LABELS[s] + ": " + n }));
    donut.append(arc);
    offset += len;
  }
  const label = svg("text", { x: 60, y: 58, "text-anchor": "middle", "font-size": 20,
    "font-weight": 600 });
  label.textContent = total;
  const sub = svg("text", { x: 60, y: 76, "text-anchor": "middle", "font-size": 9,
    fill: "#6b7785" });
  sub.textContent = connected + " connected";
  donut.append(label, sub);
}

function bars(target, series, width, height, title, axis) {
  // series: [{values, color, name}], drawn side by side per bucket.
  target.replaceChildren();
  const buckets = series[0].values.length;
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const slot = width / buckets;
  const bw = (slot - 4) / series.length;
  series.forEach((s, k) => {
    s.values.forEach((v, i) => {
      const h = (v / max) * (height - 18);
      const rect = svg("rect", { x: i * slot + 2 + k * bw, y: height - 14 - h,
        width: Math.max(bw - 1, 1), height: h, fill: s.color });
      rect.append(Object.assign(svg("title"), { textContent: title(i) + ": " + v + " " + s.name }));
      target.append(rect);
    });
  });
  const top = svg("text", { x: 4, y: 11, "font-size": 10, fill: "#6b7785" });
  top.textContent = "max " + max;
  target.append(top);
  for (const i of [0, Math.floor(buckets / 2), buckets]) {
    const tick = svg("text", { x: Math.min(Math.max(i * slot, 2), width - 2), y: height - 2,
      "font-size": 10, fill: "#6b7785",
      "text-anchor": i === 0 ? "start" : i === buckets ? "end" : "middle" });
    tick.textContent = axis(i);
    target.append(tick);
  }
}

function renderTimeline(t) {
  const width = t.bucketSeconds;
  bars($("#timeline"), [
    { values: t.expiries, color: cssVar("expired"), name: "expiries" },
    { values: t.renewalWindows, color: cssVar("renewal-due"), name: "renewal windows" },
  ], 720, 150, (i) => "in " + span(i * width) + "–" + span((i + 1) * width),
  (i) => (i ? "+" + span(i * width) : "now"));
  $("#timeline-hint").textContent = "next " + span(t.horizonSeconds) + ", " + span(width) +
    " buckets";
  bars($("#rate"), [{ values: t.issued, color: cssVar("healthy"), name: "certificates issued" }],
    720, 90, (i) => span((t.issued.length - i) * width) + " ago",
    (i) => (i === t.issued.length ? "now" : "-" + span((t.issued.length - i) * width)));
  const sum = t.issued.reduce((a, b) => a + b, 0);
  const perMin = sum / (t.horizonSeconds / 60);
  $("#rate-hint").textContent = sum + " issued in the last " + span(t.horizonSeconds) + " (" +
    perMin.toFixed(perMin < 10 ? 1 : 0) + "/min)";
}

function renderCas(cas) {
  const box = $("#ca-warnings");
  box.replaceChildren();
  for (const ca of cas.filter((c) => c.level !== "ok")) {
    box.append(el("div", { class: "ca " + ca.level },
      `CA ${ca.name} (${ca.kind}) expires in ${span(ca.secondsLeft)} — ${short(ca.notAfter)}`));
  }
}

// -- devices ---------------------------------------------------------------------------

function renderDevices(items) {
  const body = $("#devices tbody");
  body.replaceChildren();
  for (const d of items) {
    const cert = d.certificate || {};
    const row = el("tr", { "data-device": d.deviceId },
      el("td", {}, d.deviceId), el("td", { class: "lifecycle" }, badge(d.lifecycle)),
      el("td", { class: "status" }, d.status), el("td", {}, d.connectionState),
      el("td", { title: cert.notAfter || "" }, until(cert.notAfter)),
      el("td", { title: d.renewAfter || "" }, d.renewAfter ? until(d.renewAfter) : "—"));
    row.addEventListener("click", () => openDetail(d.deviceId));
    body.append(row);
  }
  if (!items.length) body.append(el("tr", {}, el("td", { colspan: 6 }, "no devices")));
}

async function openDetail(id) {
  state.detailId = id;
  await refreshDetail();
  $("#detail").scrollIntoView({ behavior: "smooth", block: "start" });
}

async function refreshDetail() {
  if (!state.detailId) return;
  const d = await api("/devices/" + encodeURIComponent(state.detailId));
  $("#detail").hidden = false;
  $("#detail-id").textContent = d.deviceId;
  const st = $("#detail-state");
  st.className = "badge " + d.lifecycle;
  st.textContent = LABELS[d.lifecycle] || d.lifecycle;
  const facts = $("#detail-facts");
  facts.replaceChildren();
  const add = (k, v) => facts.append(el("dt", {}, k), el("dd", {}, v ?? "—"));
  add("status", d.status + (d.statusReason ? " (" + d.statusReason + ")" : ""));
  add("connection", d.connectionState +
    (d.connectionStateUpdatedAt ? " since " + short(d.connectionStateUpdatedAt) : ""));
  add("authentication", d.authType);
  add("policy", d.policy);
  add("last activity", short(d.lastActivityAt));
  $("#disable-btn").disabled = d.status === "disabled";
  const certs = $("#detail-certs tbody");
  certs.replaceChildren();
  for (const c of d.certificates) {
    certs.append(el("tr", {}, el("td", { title: c.serialNumber }, c.serialNumber.slice(0, 16)),
      el("td", {}, c.state), el("td", {}, badge(c.lifecycle)), el("td", {}, c.issuedVia),
      el("td", {}, short(c.notBefore)), el("td", {}, short(c.notAfter))));
  }
  const audit = $("#detail-audit");
  audit.replaceChildren();
  for (const a of d.audit) {
    audit.append(el("li", {}, `${short(a.at)} ${a.action} by ${a.actor}` +
      (a.reason ? ` — ${a.reason}` : "")));
  }
  if (!d.audit.length) audit.append(el("li", {}, "none"));
  $("#detail-twin").textContent = JSON.stringify(d.twin, null, 2);
}

async function act(kind) {
  const id = state.detailId;
  if (!id) return;
  const verb = kind === "revoke" ? "Revoke every certificate of" : "Disable";
  if (!window.confirm(`${verb} device ${id}?`)) return;
  try {
    await api(`/devices/${encodeURIComponent(id)}/${kind}`, { method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ reason: `${kind}d from the dashboard` }) });
    status(`${id}: ${kind} done`);
  } catch (e) {
    status(`${id}: ${kind} failed: ${e.message}`);
  }
  await refresh();
}

// -- refresh loop ----------------------------------------------------------------------

function status(text) { $("#status-line").textContent = text; }

async function refresh() {
  const seq = ++state.seq;  // a slower, older refresh must not overwrite a newer one
  try {
    const query = state.search ? "?search=" + encodeURIComponent(state.search) : "";
    const [overview, devices] = await Promise.all([api("/overview"), api("/devices" + query)]);
    if (seq !== state.seq) return;
    renderTiles(overview.counts, overview.total);
    renderDonut(overview.counts, overview.total, overview.connected);
    renderTimeline(overview.timeline);
    renderCas(overview.cas);
    renderDevices(devices.items);
    await refreshDetail();
    $("#updated").textContent = "updated " + new Date().toLocaleTimeString();
    $("#updated").dataset.takenAt = overview.takenAt;
    document.body.dataset.loaded = "true";
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin("the token was not accepted");
    status("refresh failed: " + e.message);
  }
}

function showLogin(message) {
  clearInterval(state.timer);
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
}

function showApp() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = !state.loginRequired;
  refresh();
  clearInterval(state.timer);
  state.timer = setInterval(refresh, REFRESH_MS);
}

async function start() {
  const session = await api("/session");
  state.loginRequired = session.loginRequired;
  state.development = session.development;
  $("#node").textContent = "node " + session.node;
  $("#profile").textContent = session.development ? "development profile" : "";
  if (session.loginRequired && !state.token) return showLogin();
  showApp();
}

$("#login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem("certhub.dashboard.token", state.token);
  showApp();
});
$("#logout").addEventListener("click", () => {
  sessionStorage.removeItem("certhub.dashboard.token");
  state.token = "";
  showLogin();
});
$("#query-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = $("#query-result");
  try {
    const result = await api("/query", { method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query: $("#query").value }) });
    out.textContent = result.items.length + " result(s)" + (result.more ? " (more not shown)" : "") +
      "\n" + JSON.stringify(result.items, null, 2);
  } catch (e) {
    out.textContent = e.message;
  }
});
let searchTimer = null;
$("#search").addEventListener("input", (event) => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => { state.search = event.target.value.trim(); refresh(); }, 200);
});
$("#revoke-btn").addEventListener("click", () => act("revoke"));
$("#disable-btn").addEventListener("click", () => act("disable"));
$("#close-detail").addEventListener("click", () => {
  state.detailId = null;
  $("#detail").hidden = true;
});
start().catch((e) => status("could not start: " + e.message));
